"""The reference study's models as `zoo.models` configs, and its tensor names as ours.

The published zoos ("A Model Zoo on Phase Transitions in Neural Networks", code
ModelZoos/PhaseTransitionModelZoo, ptmz/models/def_net_width.py) name a model in params.json
(`model::type`, `model::width`, `model::o_dim`, ...) and save torchvision-style state dicts:

    ResNet{18,50}_width: conv1, bn1, layerK.B.{conv,bn}N, layerK.B.downsample.{0,1}, fc
    MLP:                 module_list.N (Linear, activation, Dropout when dropout > 0, ...)

`zoo.models.ResNet` / `MLP` are the same functions with other names (stem.{0,1}, layers.K-1.B...,
layers.K-1.B.shortcut.{0,1}, fc; layers.2i), so a renamed checkpoint loads strictly with `from_meta`.
"""

import re
from collections.abc import Mapping

import torch

from zoo.models import build

RESNETS = {"Resnet18_width": 18, "Resnet50_width": 50}


def model_config(params: Mapping) -> dict | None:
    """The `zoo.models` config of a reference params.json; None for a type we have no twin of."""
    kind = params.get("model::type")
    if kind in RESNETS:
        return {
            "name": "resnet",
            "depth": RESNETS[kind],
            "width": params["model::width"],
            "num_classes": params["model::o_dim"],
            "in_channels": params.get("model::channels_in", 3),
            "bias": False,
        }  # the reference's convs never have a bias; its fc always has one (as ours)
    if kind == "MLP":
        hidden = params["model::h_dim"]
        hidden = hidden if isinstance(hidden, list) else [hidden]
        if len(set(hidden)) != 1:
            raise ValueError(f"model::h_dim={hidden}: zoo.models.MLP has one width for all hidden layers")
        return {
            "name": "mlp",
            "in_dim": params["model::i_dim"],
            "out_dim": params["model::o_dim"],
            "width": hidden[0],
            "depth": len(hidden),
            "bias": params.get("model::use_bias", True),
            "activation": params.get("model::nlin", "leakyrelu"),
        }  # dropout: inactive at eval, not kept
    return None


def resnet_name(name: str) -> str:
    """`layer2.0.downsample.1.weight` -> `layers.1.0.shortcut.1.weight`, `conv1.weight` -> `stem.0.weight`."""
    if m := re.fullmatch(r"(conv1|bn1)\.(.+)", name):
        return f"stem.{0 if m.group(1) == 'conv1' else 1}.{m.group(2)}"
    if m := re.fullmatch(r"layer(\d)\.(\d+)\.(.+)", name):
        return f"layers.{int(m.group(1)) - 1}.{m.group(2)}.{m.group(3).replace('downsample.', 'shortcut.')}"
    return name  # fc.*


def mlp_names(names: list[str]) -> dict[str, str]:
    """`module_list.N.x` -> `layers.2i.x`, i counting the Linear layers (dropout shifts N, not i)."""
    indices = sorted({int(n.split(".")[1]) for n in names if n.startswith("module_list.")})
    ours = {n: 2 * i for i, n in enumerate(indices)}
    return {n: re.sub(r"^module_list\.(\d+)", lambda m: f"layers.{ours[int(m.group(1))]}", n) for n in names}


def to_zoo(state: Mapping[str, torch.Tensor], model_cfg: Mapping, where: str) -> dict[str, torch.Tensor]:
    """A reference state dict with our names, in our module order; `where` names it in errors."""
    state = {n.removeprefix("module."): t for n, t in state.items()}  # saved from DataParallel
    names = {n: resnet_name(n) for n in state} if model_cfg["name"] == "resnet" else mlp_names(list(state))
    renamed = {names[n]: t for n, t in state.items()}
    with torch.device("meta"):  # names and shapes only: no memory, no init
        expected = {n: t.shape for n, t in build({**model_cfg, "init": "default"}).state_dict().items()}
    missing, unexpected = set(expected) - set(renamed), set(renamed) - set(expected)
    wrong = [
        f"{n} {tuple(renamed[n].shape)} != {tuple(s)}"
        for n, s in expected.items()
        if n in renamed and renamed[n].shape != s
    ]
    if missing or unexpected or wrong:
        raise ValueError(
            f"{where}: does not fit zoo.models.{model_cfg['name']} {dict(model_cfg)} "
            f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}, shapes {wrong[:3]}); "
            "is params.json the one this checkpoint was trained with?"
        )
    return {n: renamed[n] for n in expected}
