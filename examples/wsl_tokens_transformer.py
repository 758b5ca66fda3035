"""A small transformer on the `tokens` view of a packed zoo: predicts a checkpoint's test accuracy
from its weights, one token per neuron (incoming weights, bias appended), as hyper-representation
models read them (Schürholt et al., SANE).

Weights are normalized per layer with statistics over the train split (`normalize=True`), and
augmented by permutation, noise and erasing while training. Each token is embedded with its
(layer, unit, chunk) position; the sequence is mean-pooled over real tokens. Scored on the models of
the test split, which it never saw. Widths up to 64 keep the sequences short enough for 2 CPU cores.

    python examples/wsl_tokens_transformer.py [manifests/demo.json] [--epochs 30]
"""

import argparse

import torch
import webdataset as wds
from scipy.stats import kendalltau
from torch import nn
from torch.utils.data import DataLoader

from zoo.load import Chain, Erase, Noise, Permute, Tokens, open_zoo

TOKENS = Tokens(token_size=64, max_tokens=160)
WHERE = {"model.width": [2, 4, 8, 16, 32, 64], "status": "ok"}
SPLITS = (0.7, 0.3)  # train, test: models by hashed id


def load(manifest: str, split: str, augment: bool) -> DataLoader:
    transform = Chain(Permute(seed=0), Noise(0.01, relative=True, seed=0), Erase(0.05, seed=0)) if augment else None
    zoo = open_zoo(
        manifest,
        view=TOKENS,
        where=WHERE,
        split=split,
        splits=SPLITS,
        normalize=True,
        targets=["metrics.test_acc"],
        transform=transform,
        shuffle=1000 if augment else 0,
    )
    return DataLoader(zoo.compose(wds.map(lambda s: s[:2])), batch_size=32)  # (view, targets)


class WeightTransformer(nn.Module):
    def __init__(self, token_size: int, dim: int = 64, depth: int = 2, max_units: int = 256):
        super().__init__()
        self.embed = nn.Linear(token_size, dim)
        self.layer, self.unit, self.chunk = nn.Embedding(16, dim), nn.Embedding(max_units, dim), nn.Embedding(16, dim)
        block = nn.TransformerEncoderLayer(dim, 4, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(block, depth)
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 1))

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        real = mask.any(-1)  # padding tokens have no real value
        x = (
            self.embed(tokens)
            + self.layer(positions[..., 0])
            + self.unit(positions[..., 1])
            + self.chunk(positions[..., 2])
        )
        x = self.encoder(x, src_key_padding_mask=~real)
        pooled = (x * real[..., None]).sum(1) / real.sum(1, keepdim=True)
        return self.head(pooled).squeeze(-1)


def run(model: nn.Module, batch) -> tuple[torch.Tensor, torch.Tensor]:
    view, targets = batch
    return model(view["tokens"], view["positions"], view["mask"]), targets["metrics.test_acc"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("manifest", nargs="?", default="manifests/demo.json")
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)  # small batches: one thread beats two that contend
    train, test = load(args.manifest, "train", augment=True), load(args.manifest, "test", augment=False)
    y_train = torch.cat([targets["metrics.test_acc"] for _, targets in load(args.manifest, "train", augment=False)])
    mean, std = y_train.mean(), y_train.std()  # the model predicts standardized accuracy
    model = WeightTransformer(TOKENS.token_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    steps = args.epochs * -(-len(y_train) // 32)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
    for epoch in range(args.epochs):
        losses = []
        for batch in train:
            pred, y = run(model, batch)
            loss = nn.functional.mse_loss(pred, (y - mean) / std)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
        if epoch % 10 == 9:
            print(f"epoch {epoch + 1}: train MSE {sum(losses) / len(losses):.3f} (standardized accuracy)")
    model.eval()
    with torch.no_grad():
        pred, y = (torch.cat(part) for part in zip(*(run(model, batch) for batch in test)))
        pred = pred * std + mean
    r2 = 1 - ((pred - y) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    print(
        f"test accuracy of {len(y)} checkpoints of held-out models (widths ≤ 64): "
        f"R² {r2:.3f}, Kendall τ {kendalltau(pred, y).statistic:.3f}"
    )


if __name__ == "__main__":
    main()
