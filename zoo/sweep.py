"""The cells of a sweep, enumerated exactly as Hydra's basic sweeper launches them.

Lets the pipeline, summaries and resubmission know every model id of a zoo without
running anything: zoo config `hydra.sweeper.params` + command-line overrides (which win).
"""

import re

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper  # its cell expansion, reused
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, ListConfig, OmegaConf

from zoo.config import CONF_DIR, search_path_overrides, validate
from zoo.train.ids import identity

PLAIN_TOP_LEVEL_KEYS = ("seed",)


def compose_config(overrides: list[str] = (), *, hydra: bool = False, config_name: str = "train") -> DictConfig:
    """The config a run with these overrides gets (`hydra=True` keeps the `hydra` node); its values
    are checked (`zoo.config.validate`), so every command refuses a bad value the same way."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name, search_path_overrides() + list(overrides), return_hydra_config=hydra)
    validate(cfg)
    return cfg


def fixed_overrides(overrides: list[str]) -> list[str]:
    """The overrides that are not sweeps (`a=1,2` is a sweep): what every cell shares."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return [o.input_line for o in parsed if not o.is_sweep_override()]


def cell_overrides(overrides: list[str] = (), config_name: str = "train") -> list[list[str]]:
    """One override list per cell of the sweep, in Hydra's launch order."""
    cfg = compose_config(fixed_overrides(overrides), hydra=True, config_name=config_name)
    return sweep_cells(cfg.hydra.sweeper.params, overrides)


def sweep_cells(params: DictConfig | None, overrides: list[str]) -> list[list[str]]:
    """The cells of the zoo's sweep `params` (`hydra.sweeper.params`) under command-line `overrides`."""
    arguments = [f"{key}={value}" for key, value in (params or {}).items()] + list(overrides)
    parsed = OverridesParser.create().parse_overrides(arguments)
    return BasicSweeper.split_arguments(parsed, max_batch_size=None)[0]


def cell_configs(overrides: list[str] = (), config_name: str = "train") -> list[DictConfig]:
    """Resolved config (with `id` and `grid`) of every model the sweep trains: the zoo's members.
    `config_name` may be a config that extends train.yaml (pack.yaml), to accept its keys."""
    cells = cell_overrides(overrides, config_name)
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose_cells(cells, config_name)


def cell_views(overrides: list[str] = (), config_name: str = "train") -> list["Resolved"]:
    """`cell_configs` as plain dicts read like configs: ~50x faster to build than OmegaConf nodes,
    for the commands that only read the cells (zoo-plan, zoo-status)."""
    return views(cell_overrides(overrides, config_name), config_name)


def views(cells: list[list[str]], config_name: str = "train") -> list["Resolved"]:
    """The `Resolved` config of each cell's override list (`cell_overrides`, `sweep_cells`)."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return [Resolved(cfg) for cfg in _resolved_cells(cells, config_name)]


def compose_cells(cells: list[list[str]], config_name: str = "train") -> list[DictConfig]:
    """Resolved config (with `id` and `grid`) of each cell's override list, inside an initialized
    Hydra (`initialize_config_dir`, or a running app such as a launcher)."""
    return [OmegaConf.create(cfg) for cfg in _resolved_cells(cells, config_name)]


class Resolved(dict):
    """A resolved config as plain dicts, read like a DictConfig (`cfg.model.width`, `.get`)."""

    def __init__(self, plain: dict):
        super().__init__((k, _view(v)) for k, v in plain.items())

    def __getattr__(self, key: str):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"config has no key {key!r}") from None


def _view(value):
    if isinstance(value, dict):
        return Resolved(value)
    return [_view(v) for v in value] if isinstance(value, list) else value


def _resolved_cells(cells: list[list[str]], config_name: str = "train") -> list[dict]:
    """The resolved config (with `id` and `grid`) of each cell's override list, as plain dicts,
    inside an initialized Hydra (`initialize_config_dir`, or a running app such as a launcher).
    Cells share the sub-dicts their overrides leave unchanged: callers copy them (`Resolved`,
    `OmegaConf.create`).

    Composing and resolving are slow (~70 ms a cell), so cells are composed once per distinct set of
    structural overrides (config groups, `+`/`~`) and their plain `a.b=value` overrides are set on
    that composition in place — the same update Hydra itself applies for them. That composition is
    resolved once; per cell only the overridden keys and the interpolations that refer to them are
    read again. Cells share a composition only when they set the same keys, so every cell
    overwrites what the one before it set. Values that are dicts or lists merge (Hydra's rule): those cells are composed
    and resolved on their own.
    """
    parser, known = OverridesParser.create(), {}
    groups: dict[tuple, _Composition] = {}
    configs = []
    for cell in cells:
        for line in cell:  # cells repeat the same overrides: each is parsed once
            if line not in known:
                known[line] = parser.parse_overrides([line])[0]
        parsed = [known[line] for line in cell]
        plain = [(o.key_or_group, o.value()) for o in parsed if _is_plain_value(o)]
        structural = tuple(o.input_line for o in parsed if not _is_plain_value(o))
        if any(isinstance(v, (dict, list)) for _, v in plain):
            cfg = compose(config_name, search_path_overrides() + list(structural))
            for k, value in plain:
                OmegaConf.update(cfg, k, value, merge=True)
            resolved = OmegaConf.to_container(cfg, resolve=True)
        else:
            key = (structural, tuple(k for k, _ in plain))
            if key not in groups:
                groups[key] = _Composition(compose(config_name, search_path_overrides() + list(structural)), plain)
            resolved = groups[key].resolve(plain)
        validate(resolved)
        configs.append(identity(resolved))
    return configs


class _Composition:
    """One composed config with the plain keys `keys` set per cell, resolved once (with the first
    cell's values); `resolve` sets a cell's values and reads again only what they can change: the
    overridden keys and the interpolations that refer to them (`_depending`)."""

    def __init__(self, cfg: DictConfig, plain: list[tuple[str, object]]):
        self.cfg = cfg
        self._update(plain)
        self.base = OmegaConf.to_container(cfg, resolve=True)
        keys = [key for key, _ in plain]
        self.paths = [tuple(key.split(".")) for key in keys] + _depending(cfg, keys)

    def _update(self, plain: list[tuple[str, object]]) -> None:
        for key, value in plain:
            OmegaConf.update(self.cfg, key, value, merge=True)

    def resolve(self, plain: list[tuple[str, object]]) -> dict:
        self._update(plain)
        resolved = dict(self.base)
        for path in self.paths:  # copied along the path, the rest shared with `base`
            node, target = self.cfg, resolved
            for part in path[:-1]:
                child = target[part] if isinstance(target, list) or part in target else {}
                target[part] = list(child) if isinstance(child, list) else dict(child)
                node, target = node[part], target[part]
            value = node[path[-1]]
            is_node = isinstance(value, (DictConfig, ListConfig))
            target[path[-1]] = OmegaConf.to_container(value, resolve=True) if is_node else value
        return resolved


# In an interpolation: a key it refers to (`${a.b}`, `${oc.select:a.b,...}`), and a resolver it calls.
_REFERENCE = re.compile(r"\$\{(?:oc\.select:)?([A-Za-z_][\w.-]*)(?=[},])")
_RESOLVER = re.compile(r"\$\{([\w.]+):")
PURE_RESOLVERS = ("oc.env", "oc.select", "slug", "reference_accumulation")  # their value follows from their text


def _depending(cfg: DictConfig, keys: list[str]) -> list[tuple]:
    """The interpolations of `cfg` whose value can change with the values at `keys`: those that
    refer to one of them (or to a node holding one, or one inside it), directly or through another
    such interpolation. Relative references and other resolvers count as depending (unknown)."""
    text = {path: node._get_node(path[-1])._value() for path, node in _interpolations(cfg)}
    changing, depending = set(keys), []
    while True:
        new = [path for path, raw in text.items() if path not in depending and _refers(raw, changing)]
        if not new:
            return depending
        depending += new
        changing |= {".".join(map(str, path)) for path in new}


def _refers(raw: str, keys: set[str]) -> bool:
    if "${." in raw or any(r not in PURE_RESOLVERS for r in _RESOLVER.findall(raw)):
        return True
    refs = _REFERENCE.findall(raw)
    return any(r == k or k.startswith(r + ".") or r.startswith(k + ".") for r in refs for k in keys)


def _interpolations(node: DictConfig | ListConfig, path: tuple = ()):
    """(path, parent node) of every value of `node` that is an interpolation (`${...}`), at any depth."""
    for key in node.keys() if isinstance(node, DictConfig) else range(len(node)):
        child = node._get_node(key)
        if OmegaConf.is_interpolation(node, key):
            yield (*path, key), node
        elif isinstance(child, (DictConfig, ListConfig)):
            yield from _interpolations(child, (*path, key))


def _is_plain_value(override: Override) -> bool:
    # Config groups are addressed with `/`, never `.`; top-level plain keys (seed) are listed.
    key = override.key_or_group
    return (
        not override.is_add()
        and not override.is_delete()
        and not override.is_force_add()
        and ("." in key or key in PLAIN_TOP_LEVEL_KEYS)
        and not key.startswith("hydra")
    )
