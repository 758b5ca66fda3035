"""Weight-space learning on a packed zoo: predict a checkpoint's test accuracy (and its model's
phase) from its weights alone.

Streams the shards with `open_zoo`, turns each checkpoint into per-layer weight statistics
(invariant to hidden-unit permutations and defined for every width; Unterthiner et al. 2020,
"Predicting Neural Network Accuracy from Weights"), and trains a small MLP on the models of
seed 0. It is scored on the models of seed 1, which it never saw. For a zoo too large to
featurize up front, iterate `open_zoo(..., shuffle=1000)` once per epoch instead.

    zoo-run zoo=demo                                   # trains, packs: manifests/demo.json
    python examples/wsl_predict_accuracy.py [manifests/demo.json] [--steps 1000]
"""

import argparse

import torch
import webdataset as wds
from scipy.stats import kendalltau
from torch import nn
from torch.utils.data import DataLoader

from zoo.load import open_zoo

PHASES = ("I", "II", "III", "IV-A", "IV-B")
QUANTILES = torch.tensor([0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0])


def features(layers: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per layer: log size, log std, log mean |w|, log max |w|, skewness, log kurtosis and quantiles
    of the standardized weights. Logs keep layers of very different widths on one scale."""
    out = []
    for w in layers.values():
        std = w.std()
        z = (w - w.mean()) / std
        out += [torch.tensor(w.numel()).log(), std.log(), w.abs().mean().log(), w.abs().max().log(),
                (z ** 3).mean(), (z ** 4).mean().log(), *torch.quantile(z, QUANTILES)]
    return torch.stack(out)


def example(sample: tuple) -> tuple[torch.Tensor, torch.Tensor, int]:
    """`(features, test accuracy, phase index or -1 if unlabelled)` of one streamed sample."""
    layers, meta = sample
    phase = PHASES.index(meta["phase"]) if meta["phase"] in PHASES else -1
    return features(layers), torch.tensor(meta["metrics"]["test_acc"], dtype=torch.float32), phase


def load(manifest: str, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features, accuracies and phases of all checkpoints of the models with this seed, streamed
    from the shards by two DataLoader workers (each reads its own shards)."""
    samples = open_zoo(manifest, view="layers", where={"seed": seed}).compose(wds.map(example))
    x, acc, phase = zip(*DataLoader(samples, batch_size=256, num_workers=2))
    return torch.cat(x), torch.cat(acc), torch.cat(phase)


def train(x: torch.Tensor, acc: torch.Tensor, phase: torch.Tensor, steps: int) -> nn.Module:
    """A small MLP: head 0 regresses accuracy, heads 1.. classify the phase (where labelled)."""
    mean, std = x.mean(0), x.std(0) + 1e-8
    model = nn.Sequential(Standardize(mean, std), nn.Linear(x.shape[1], 64), nn.ReLU(),
                          nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1 + len(PHASES)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    labelled = phase >= 0
    for _ in range(steps):
        out = model(x)
        loss = nn.functional.mse_loss(out[:, 0], acc)
        if labelled.any():
            loss = loss + 0.1 * nn.functional.cross_entropy(out[labelled, 1:], phase[labelled])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


class Standardize(nn.Module):
    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x):
        return (x - self.mean) / self.std


@torch.no_grad()
def score(model: nn.Module, x: torch.Tensor, acc: torch.Tensor, phase: torch.Tensor) -> float:
    """Print how well the model does on unseen models; returns R² of the accuracy prediction."""
    out = model(x)
    pred = out[:, 0]
    r2 = 1 - ((pred - acc) ** 2).sum().item() / ((acc - acc.mean()) ** 2).sum().item()
    tau = kendalltau(pred.numpy(), acc.numpy()).statistic
    print(f"test accuracy from weights, {len(acc)} checkpoints of unseen models: R² {r2:.3f}, Kendall τ {tau:.3f} "
          f"(predicting the mean: R² 0)")
    labelled = phase >= 0
    if labelled.any():
        hits = (out[labelled, 1:].argmax(1) == phase[labelled]).float().mean().item()
        majority = phase[labelled].bincount().max().item() / labelled.sum().item()
        print(f"phase from weights: {100 * hits:.0f} % correct on {labelled.sum().item()} labelled checkpoints "
              f"(majority class: {100 * majority:.0f} %)")
    else:
        print("phase from weights: no phase labels in this zoo yet (run the phases stage, then re-pack)")
    return r2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("manifest", nargs="?", default="manifests/demo.json")
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()
    torch.manual_seed(0)
    train_set, test_set = load(args.manifest, seed=0), load(args.manifest, seed=1)
    print(f"{len(train_set[0])} checkpoints of seed-0 models to train on, {len(test_set[0])} of seed-1 models "
          f"to test on, {train_set[0].shape[1]} features each")
    model = train(*train_set, steps=args.steps)
    print(f"score: R2={score(model, *test_set):.3f}")


if __name__ == "__main__":
    main()
