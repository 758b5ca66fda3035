"""`app=transfer`: each model of a grid cell on a target task, as the reference study measures
transfer learning per phase.

The target is the zoo's data section with the overrides `apply.transfer.target.<data.name>` (the
demo: MNIST-1D drawn with other generator settings, a shifted domain; CIFAR-10 -> CIFAR-100, ...).
Every model gets a new, freshly drawn head (the last Linear layer, sized for the target's classes)
and is trained for the same budget (`epochs` over the target's training split, `batch_size`) with
the model's own recipe (optimizer, lr and its schedule):

- `probe_acc`: linear probe, only the head trained; the features — BatchNorm statistics included —
  stay exactly the trained model's;
- `finetune_acc`: full fine-tuning of every weight;
- `scratch_acc`: the same architecture from a fresh init, trained the same way;
- `probe_gain`, `finetune_gain`: their target test accuracy minus scratch's.
"""

import statistics
from collections.abc import Mapping, Sequence

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from zoo import data as datasets
from zoo.apply.apps import State
from zoo.apply.training import FRESH_SEED, fresh_init, train_steps
from zoo.config import ConfigError
from zoo.models import build
from zoo.train.evaluate import evaluate

METRICS = ("probe_acc", "finetune_acc", "scratch_acc", "probe_gain", "finetune_gain")


def target_data(cfg: DictConfig, settings: Mapping, data_root: str):
    """The target task of a zoo trained on `cfg.data`: (data, its data section)."""
    targets, source = settings["target"], cfg.data.name
    if source not in targets:
        raise ConfigError(
            f"apply.transfer.target has no target task for data.name={source} (zoo {cfg.zoo.name}): "
            f"add apply.transfer.target.{source}: {{...}}, overrides of the zoo's data section "
            f"(e.g. {{name: cifar100, num_classes: 100}})"
        )
    section = {**OmegaConf.to_container(cfg.data, resolve=True), **targets[source]}
    return datasets.load(section, data_root), section


def head_name(model: nn.Module) -> str:
    """The classifier head: the model's last Linear layer (MLP `layers.<last>`, ResNet `fc`, ViT `head`)."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear)][-1]


def new_head(model: nn.Module, num_classes: int, seed: int) -> nn.Module:
    """Replace the head, in place, by a freshly drawn one with `num_classes` outputs."""
    name = head_name(model)
    old = model.get_submodule(name)
    parent, _, attr = name.rpartition(".")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        setattr(model.get_submodule(parent), attr, nn.Linear(old.in_features, num_classes, bias=old.bias is not None))
    return model


def protocol(cfg: DictConfig, final: State, data, num_classes: int, settings: Mapping) -> dict[str, float]:
    """Probe, fine-tune and scratch of one model on the target `data`: their target test accuracy."""
    steps = settings["epochs"] * len(data.batches("train", settings["batch_size"]))
    seed = cfg.seed + FRESH_SEED  # the new head's draw: the same for the three runs

    def trained(model: nn.Module, probe: bool = False) -> float:
        model = new_head(model, num_classes, seed)
        head = model.get_submodule(head_name(model))
        train_steps(
            model,
            data,
            cfg.optim,
            steps=steps,
            batch_size=settings["batch_size"],
            seed=cfg.seed,
            trainable=list(head.parameters()) if probe else None,
        )
        return evaluate(model, data.batches("test", settings["batch_size"]))["acc"]

    def pretrained() -> nn.Module:
        model = build({**cfg.model, "init": "default"})
        model.load_state_dict(final)
        return model

    out = {
        "probe_acc": trained(pretrained(), probe=True),
        "finetune_acc": trained(pretrained()),
        "scratch_acc": trained(fresh_init(cfg)),
    }
    return out | {
        "probe_gain": out["probe_acc"] - out["scratch_acc"],
        "finetune_gain": out["finetune_acc"] - out["scratch_acc"],
    }


def cell(cfg: DictConfig, finals: Sequence[State], settings: Mapping, data_root: str) -> dict:
    """Every seed's `protocol`; cell values are means over seeds, `per_model` keeps each seed's."""
    data, section = target_data(cfg, settings, data_root)
    models = [protocol(cfg, final, data, section["num_classes"], settings) for final in finals]
    return {"target": section, **{k: statistics.mean(m[k] for m in models) for k in METRICS}, "per_model": models}
