"""What a zoo's models are trained to do: the one place a task is known, picked by `data.task`
(default `classify`). A `Task` gives everything that depends on it — the LightningModule that trains,
and what the landscape and merging stages measure:

    task      trained on                              loss on a batch             err (headline)
    classify  (x, y) batches (mnist1d, images)        cross-entropy               1 - accuracy (test_acc)
    lm        next-token windows (x, y = x shifted)   token cross-entropy         1 - next-token accuracy (test_acc)
    pinn      collocation + initial + boundary points residual + initial + boundary,  relative L2 error against
              (zoo.train.pinn)                        as trained; MSE on the grid  the exact solution (test_rel_l2)

Fixed evaluation batches (`batches`) are the same for every model of a zoo: a seeded subset of a split
(classify), seeded windows of a split (lm), the training points or a seeded subset of the test grid
(pinn). CKA features (`features`): the logits, the final hidden states per token (lm), the last hidden
layer on the grid points (pinn); `layer` names another module, `output` the model's output.
"""

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from zoo import data as datasets
from zoo.config import accumulation, task_name
from zoo.data.convection import ConvectionData, exact_solution
from zoo.data.tokens import TokenData, Windows
from zoo.models.outputs import features as module_output
from zoo.train.pinn_loss import pinn_terms

if TYPE_CHECKING:  # Lightning only where a model trains: the landscape and apply workers never import it
    import lightning.pytorch as pl

Batch = tuple[Tensor, ...]
Net = Callable[[Tensor], Tensor]  # the network as a function of its input (a module, or a module at given weights)


class Classify:
    """Cross-entropy classifiers; every model of the zoo is measured on the same batches."""

    name = "classify"
    headline = "test_acc"  # the metrics.jsonl key a run is summed up by
    batchnorm = True  # merged and curve models get BatchNorm statistics recomputed
    cka_layer: str | None = None  # the logits

    def module(self, model: nn.Module, data: Any, cfg: DictConfig) -> "pl.LightningModule":
        from zoo.train.module import Classifier

        return Classifier(
            model,
            data,
            cfg.optim,
            batch_size=cfg.data.batch_size,
            max_epochs=cfg.trainer.max_epochs,
            seed=cfg.seed,
            eval_batch_size=cfg.data.eval_batch_size,
            accumulate=accumulation(cfg),
        )

    def split_size(self, data: Any, split: str) -> int:
        return len(data.split(split)[0])

    def batches(
        self, data: Any, split: str, batch_size: int, n: int | None = None, seed: int = 0, offset: int = 0
    ) -> list[Batch]:
        """`split` as the model sees it (transformed, not augmented); with `n`, a fixed seeded subset of
        n samples from position `offset` of the seeded order."""
        x, y = data.split(split)
        if n is not None:
            idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[offset : offset + n]
            x, y = x[idx], y[idx]
        return list(datasets.Batches(x, y, batch_size, transform=data.transform))

    def loss(self, net: Net, batch: Batch) -> Tensor:
        x, y = batch
        return F.cross_entropy(net(x).flatten(0, -2), y.flatten())  # (b, t, c) -> (b*t, c); no-op for (b, c)

    def size(self, batch: Batch) -> int:
        return batch[1].numel()

    def inputs(self, batch: Batch) -> Tensor:
        return batch[0]

    @torch.no_grad()
    def measure(self, net: Net, batches: Sequence[Batch]) -> dict[str, float]:
        """Mean loss and error over all samples (tokens) of `batches`."""
        n = loss = wrong = 0.0
        for x, y in batches:
            logits, y = net(x).flatten(0, -2), y.flatten()
            n += len(y)
            loss += F.cross_entropy(logits, y, reduction="sum").item()
            wrong += (logits.argmax(1) != y).sum().item()
        return {"loss": loss / n, "err": wrong / n}

    def features(self, model: nn.Module, batch: Batch, layer: str | None = None) -> Tensor:
        """(n, d) CKA features: `layer` (default `cka_layer`; `output` = the model's output) per sample."""
        layer = layer or self.cka_layer
        return module_output(model, self.inputs(batch), None if layer == "output" else layer).flatten(1)


class LanguageModel(Classify):
    """Next-token prediction: a classifier of the next token at every position, measured on fixed
    seeded windows; LayerNorm only, so nothing to recompute."""

    name = "lm"
    batchnorm = False
    cka_layer = "ln_f"  # the final hidden states; `output` for the logits

    def loss(self, net: Net, batch: Batch) -> Tensor:
        # Attention in plain ops: the fused kernels have no double backward, which Hessian-vector products need.
        with sdpa_kernel(SDPBackend.MATH):
            return super().loss(net, batch)

    def split_size(self, data: TokenData, split: str) -> int:
        return data.eval_windows

    def batches(
        self, data: TokenData, split: str, batch_size: int, n: int | None = None, seed: int = 0, offset: int = 0
    ) -> list[Batch]:
        """`n` (default: data.eval_windows) windows of `split` drawn with `seed`, from window `offset` on."""
        tokens = {"train": data.train, "test": data.test}[split]
        return list(Windows(tokens, data.context, n or data.eval_windows, batch_size, lambda: seed, offset))

    def features(self, model: nn.Module, batch: Batch, layer: str | None = None) -> Tensor:
        """One row per token: (b * t, d)."""
        layer = layer or self.cka_layer
        return module_output(model, self.inputs(batch), None if layer == "output" else layer).flatten(0, -2)


class PDE:
    """Physics-informed networks on the convection equation (zoo.data.convection): the loss is the
    training loss (residual + initial + boundary on the training points), on the test grid the MSE
    against the exact solution; the error is the relative L2 error against the exact solution."""

    name = "pinn"
    headline = "test_rel_l2"
    batchnorm = False

    def __init__(self, beta: float, depth: int):
        self.beta = beta
        self.cka_layer = f"layers.{2 * depth - 1}"  # zoo.models.MLP: the last hidden activation

    def module(self, model: nn.Module, data: ConvectionData, cfg: DictConfig) -> "pl.LightningModule":
        from zoo.train.pinn import PINN

        return PINN(model, data, cfg.optim, max_epochs=cfg.trainer.max_epochs, steps_per_epoch=cfg.data.steps_per_epoch)

    def split_size(self, data: ConvectionData, split: str) -> int:
        return len(data.collocation) if split == "train" else len(data.grid)

    def batches(
        self, data: ConvectionData, split: str, batch_size: int, n: int | None = None, seed: int = 0, offset: int = 0
    ) -> list[Batch]:
        """`train`: the training points as one full batch (the loss as trained); `test`: the grid
        points with the exact solution, or a seeded subset of n of them, in batches."""
        if split == "train":
            return [data.train_batch()]
        x = data.grid
        if n is not None:
            x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[offset : offset + n]]
        return [(p, data.exact(p)) for p in x.split(batch_size)]

    def loss(self, net: Net, batch: Batch) -> Tensor:
        if len(batch) == 2:
            x, u = batch
            return (net(x) - u).pow(2).mean()
        return sum(pinn_terms(net, self.beta, *batch).values())

    def size(self, batch: Batch) -> int:
        return len(batch[0])

    def inputs(self, batch: Batch) -> Tensor:
        return batch[0]

    def measure(self, net: Net, batches: Sequence[Batch]) -> dict[str, float]:
        """Mean loss over the batches; relative L2 error at all their points (training batches:
        collocation and initial points)."""
        n = loss = sq_err = sq_exact = 0.0
        for batch in batches:
            with torch.enable_grad():  # the residual differentiates the network by its input
                loss += self.loss(net, batch).item() * self.size(batch)
            x = batch[0] if len(batch) == 2 else torch.cat([batch[0], batch[1]])
            with torch.no_grad():
                u, exact = net(x), exact_solution(x, self.beta)
                sq_err += (u - exact).pow(2).sum().item()
                sq_exact += exact.pow(2).sum().item()
            n += self.size(batch)
        return {"loss": loss / n, "err": (sq_err / sq_exact) ** 0.5}

    def features(self, model: nn.Module, batch: Batch, layer: str | None = None) -> Tensor:
        layer = layer or self.cka_layer
        return module_output(model, self.inputs(batch), None if layer == "output" else layer).flatten(1)


Task = Classify | LanguageModel | PDE
NAMES = ("classify", "lm", "pinn")


def task_of(cfg: DictConfig) -> Task:
    """The task of a model config (`data.task`)."""
    name = task_name(cfg)
    if name == "classify":
        return Classify()
    if name == "lm":
        return LanguageModel()
    if name == "pinn":
        return PDE(float(cfg.data.beta), int(cfg.model.depth))
    raise ValueError(f"unknown data.task={name!r}; choose one of {list(NAMES)}")


def build_module(model: nn.Module, data: Any, cfg: DictConfig) -> "pl.LightningModule":
    """The LightningModule that trains `model` on `data` as `cfg` says."""
    return task_of(cfg).module(model, data, cfg)
