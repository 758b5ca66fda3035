"""Weight-space learning on a packed zoo: predict a checkpoint's test accuracy from its weights alone,
for models never seen in training, against the baseline of Unterthiner et al. 2020 ("Predicting
Neural Network Accuracy from Weights": gradient boosting on per-layer weight statistics).

The zoo is split by model (`open_zoo(split=...)`: every checkpoint of a model in one split, by a
hash of its id): models of the train split to fit on, of the val split to choose the ensemble
weight, of the test split to report on. Both predictors read the same features, per tensor: mean,
variance and the 0/25/50/75/100 % quantiles (the paper's statistics). The baseline is sklearn's
HistGradientBoostingRegressor with its defaults; ours averages it with an MLP trained on the same
features (a different kind of learner makes different errors), weighted by the val split.

    zoo-run zoo=demo                                   # trains, packs: manifests/demo.json
    pip install -e '.[wsl]'                            # scikit-learn, for the baseline
    python examples/wsl_predict_accuracy.py [manifests/demo.json]
"""

import argparse

import numpy as np
import torch
import webdataset as wds
from scipy.stats import kendalltau
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.metrics import r2_score
from threadpoolctl import threadpool_limits
from torch import nn
from torch.utils.data import DataLoader

from zoo.load import open_zoo

QUANTILES = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
SPLITS = (0.7, 0.15, 0.15)


def features(weights: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per tensor: mean, variance and quantiles of its values (Unterthiner et al. 2020, section 3)."""
    out = []
    for w in weights.values():
        w = w.reshape(-1).float()
        out += [w.mean(), w.var(), *torch.quantile(w, QUANTILES)]
    return torch.stack(out)


def example(sample: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    weights, targets, _ = sample
    return features(weights), targets["metrics.test_acc"]


def load(manifest: str, split: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features and test accuracies of every checkpoint of the models in `split`, computed by two
    DataLoader workers (each reads its own shards)."""
    samples = open_zoo(
        manifest,
        view="state_dict",
        split=split,
        splits=SPLITS,
        split_seed=seed,
        targets=["metrics.test_acc"],
        where={"status": "ok"},
    ).compose(wds.map(example))
    x, y = zip(*DataLoader(samples, batch_size=256, num_workers=2))
    return torch.cat(x).numpy(), torch.cat(y).numpy()


def fit_mlp(x: np.ndarray, y: np.ndarray, steps: int = 1000, seed: int = 0) -> nn.Module:
    """An MLP on standardized features, full batch, AdamW with a cosine schedule."""
    torch.manual_seed(seed)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    mean, std = x.mean(0), x.std(0) + 1e-8
    model = nn.Sequential(nn.Linear(x.shape[1], 128), nn.GELU(), nn.Linear(128, 128), nn.GELU(), nn.Linear(128, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-2)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    z = (x - mean) / std
    for _ in range(steps):
        loss = nn.functional.mse_loss(model(z).squeeze(1), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()
    return lambda data: model((torch.from_numpy(data) - mean) / std).squeeze(1).detach().numpy()


def report(name: str, pred: np.ndarray, y: np.ndarray) -> float:
    r2, tau = r2_score(y, pred), kendalltau(pred, y).statistic
    print(f"{name:<47} R² {r2:6.3f}   Kendall τ {'  n/a' if np.isnan(tau) else f'{tau:.3f}'}")
    return r2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("manifest", nargs="?", default="manifests/demo.json")
    parser.add_argument("--split-seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny models: one thread each beats two that contend (here, and under load)
    threadpool_limits(1)  # the same for the OpenMP threads of the boosting
    (x, y), (x_val, y_val), (x_test, y_test) = (
        load(args.manifest, s, args.split_seed) for s in ("train", "val", "test")
    )
    print(
        f"checkpoints: {len(y)} train, {len(y_val)} val, {len(y_test)} test (split by model, ratios {SPLITS}); "
        f"{x.shape[1]} features each"
    )

    baseline = HistGradientBoostingRegressor(random_state=0).fit(x, y)
    mlp = fit_mlp(x, y)
    weights = np.linspace(0, 1, 11)  # share of the MLP in the ensemble, chosen on the val split
    val_r2 = [r2_score(y_val, (1 - a) * baseline.predict(x_val) + a * mlp(x_val)) for a in weights]
    a = weights[int(np.argmax(val_r2))]

    print(f"test accuracy of the {len(y_test)} held-out checkpoints, from their weights:")
    report("predicting the train mean", np.full_like(y_test, y.mean()), y_test)
    base = report("baseline: gradient boosting (Unterthiner 2020)", baseline.predict(x_test), y_test)
    report("MLP on the same features", mlp(x_test), y_test)
    ours = report(
        f"ours: {1 - a:.1f} × boosting + {a:.1f} × MLP (val-chosen)",
        (1 - a) * baseline.predict(x_test) + a * mlp(x_test),
        y_test,
    )
    print(f"ours {'≥' if ours >= base else '<'} baseline: R² {ours:.3f} vs {base:.3f}")


if __name__ == "__main__":
    main()
