"""Random access to a zoo's HDF5 export (zoo.pack.hdf5): a map-style Dataset of `(weights, meta)`."""

import json
import os
from collections.abc import Mapping
from pathlib import Path

import h5py
import torch
from torch.utils.data import Dataset

from zoo.load import views
from zoo.load.filters import WeightFilter
from zoo.load.normalize import Normalizer, layer_stats
from zoo.load.safety import ShardError
from zoo.load.select import Where, lookup
from zoo.load.splits import InSplit
from zoo.load.stream import Prepare, Transform
from zoo.load.targets import KNOWN, Targets


class ZooH5Dataset(Dataset):
    """Samples of all architecture groups, group by group in name order, rows in pack order.

    Same `view`, `epochs`, `where`, `split`/`splits`/`split_seed`, `targets`, `normalize`, `finite`,
    `max_abs` and `transform` as `open_zoo`; the state dict holds the floating-point tensors (the HDF5
    rows), weights come back as float32, `meta` is the sample's meta.json. Class lists of text
    targets come from the values in the file (phases and statuses in their fixed order). The file
    is opened lazily in each process, so DataLoader workers work.

    pairs: items are `(sample at epoch e, sample at epoch e')` for consecutive selected epochs of
    each model (sequence prediction θ_e → θ_e', ModelZooDataset's task="sequence_prediction").
    """

    def __init__(
        self,
        path: str | Path,
        *,
        view: str = "flat",
        epochs=None,
        where: Mapping | None = None,
        split: str | None = None,
        splits=(0.7, 0.15, 0.15),
        split_seed: int = 0,
        targets: list[str] | Targets | None = None,
        normalize: bool | Normalizer = False,
        finite: bool = False,
        max_abs: float | None = None,
        transform: Transform | None = None,
        pairs: bool = False,
    ):
        views.check(view)
        self.path = Path(path)
        self._h5, self._pid = None, None
        in_split = InSplit(split, splits, split_seed) if split is not None else None
        keep = WeightFilter(finite, max_abs) or None
        with h5py.File(self.path, "r") as h5:
            refuse_outside_data(h5, self.path)
            self.index = [(name, row) for name in sorted(h5) for row in _rows(h5[name], Where(where, epochs, in_split))]
            if keep is not None:
                self.index = [(g, r) for g, r in self.index if keep(self._weights(h5[g], r)[0])]
            if normalize is True:
                train = Where(where, epochs, InSplit("train", splits, split_seed) if split is not None else None)
                rows = [(name, row) for name in sorted(h5) for row in _rows(h5[name], train)]
                weights = (self._weights(h5[g], r)[0] for g, r in rows)
                normalize = Normalizer(layer_stats(w for w in weights if keep is None or keep(w)))
            if targets is not None and not isinstance(targets, Targets):
                targets = Targets(targets, _classes(h5, targets))
            if pairs:
                self.index = _pairs(h5, self.index)
        self.prepare = Prepare(view, transform, normalize or None, targets)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        if isinstance(self.index[i][0], tuple):  # an epoch pair
            return tuple(self.prepare(*self._weights(self._file()[group], row)) for group, row in self.index[i])
        group, row = self.index[i]
        return self.prepare(*self._weights(self._file()[group], row))

    @staticmethod
    def _weights(group: h5py.Group, row: int) -> tuple[dict[str, torch.Tensor], dict]:
        meta = json.loads(group["meta/json"][row])
        return views.unflatten(torch.from_numpy(group["weights"][row]).float(), meta["layout"]), meta

    def _file(self) -> h5py.File:
        if self._h5 is None or self._pid != os.getpid():  # h5py handles do not survive a fork
            self._h5, self._pid = h5py.File(self.path, "r"), os.getpid()
        return self._h5


def refuse_outside_data(h5: h5py.File, path: Path) -> None:
    """ShardError if the file would read data from elsewhere: external links, external or virtual datasets."""
    link = h5.visititems_links(lambda name, target: name if isinstance(target, h5py.ExternalLink) else None)
    if link is not None:
        raise ShardError(
            f"{path}: {link!r} is an external link to {h5.get(link, getlink=True).filename!r}; "
            "refused: an export holds its own data. Re-export it with `zoo-pack hdf5`"
        )
    outside = h5.visititems(
        lambda name, obj: name if isinstance(obj, h5py.Dataset) and (obj.external or obj.is_virtual) else None
    )
    if outside is not None:
        raise ShardError(
            f"{path}: dataset {outside!r} stores its data in other files; refused: "
            "an export holds its own data. Re-export it with `zoo-pack hdf5`"
        )


def _rows(group: h5py.Group, where: Where) -> list[int] | range:
    if not where.where and where.test is None:
        return range(group["weights"].shape[0])
    return [row for row, text in enumerate(group["meta/json"][:]) if where({"meta": json.loads(text)})]


def _pairs(h5: h5py.File, index: list[tuple[str, int]]) -> list[tuple[tuple[str, int], tuple[str, int]]]:
    """Consecutive epochs of each model among the indexed rows, in index order."""
    by_model: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for group, row in index:
        meta = h5[group]["meta"]
        by_model.setdefault((group, meta["id"][row].decode()), []).append((int(meta["epoch"][row]), row))
    pairs = []
    for (group, _), rows in by_model.items():
        rows.sort()
        pairs += [((group, a), (group, b)) for (_, a), (_, b) in zip(rows, rows[1:])]
    return pairs


def _classes(h5: h5py.File, keys: list[str]) -> dict[str, list]:
    """Class lists of the text-valued target keys: their distinct values over the file, sorted."""
    found: dict[str, set] = {}
    for name in h5:
        for text in h5[name]["meta/json"][:]:
            meta = json.loads(text)
            for key in keys:
                value = lookup(meta, key) if key not in KNOWN else None
                if isinstance(value, str):
                    found.setdefault(key, set()).add(value)
    return {key: sorted(values) for key, values in found.items()}
