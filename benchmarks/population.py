"""Population training against one-by-one training, on the whole demo zoo, in one run.

Both sides are what a user runs, on all cores:

  one-by-one:  zoo-train -m zoo=demo                               (Lightning per model, the joblib
                                                                    launcher: one worker per core)
  population:  zoo-train -m zoo=demo hydra/launcher=population     (zoo/train/grouping.py)

with the same grid (widths 2..256 x batch sizes 8..1000 x 2 seeds = 80 models) and the same
epochs (default 10 instead of the zoo's 100, to keep this affordable). Prints the grouping,
the equivalence of the two zoos (every metric and weight, model by model), models/hour, the
speedup per width (training seconds per model: one-by-one as each model logs it, population as
its population's seconds / K) and, last, `speedup: <x>x`: wall clock of the whole zoo,
launch to finish. Also measures what feeding a population's batches costs from DataLoaders
against indexing tensors held on the device.

    python benchmarks/population.py [--epochs 10] [--root DIR]
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader, TensorDataset

from zoo.data import epoch_order, epoch_seed, load
from zoo.sweep import cell_configs
from zoo.train.grouping import describe, plan
from zoo.train.rundir import run_dir

LOG_LINE = re.compile(r"(mlp-w(\d+)-b\d+-s\d+-[0-9a-f]{8}): ok .*\((?:population of (\d+), )?([\d.]+) s\)")


def launch(root: Path, overrides: list[str]) -> tuple[float, dict[int, list[float]]]:
    """Wall seconds of `zoo-train -m`, and the training seconds per model by width, from its log."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "zoo.cli.train", "-m", f"paths.root={root}", *overrides],
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"zoo-train failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    per_width = defaultdict(list)
    for _, width, k, seconds in LOG_LINE.findall(proc.stdout + proc.stderr):
        per_width[int(width)].append(float(seconds) / int(k or 1))
    return wall, per_width


def compare(cfgs_a: list, cfgs_b: list) -> str:
    """Model-by-model agreement of two trainings of the same zoo."""
    bitwise, worst_w, worst_m = 0, 0.0, defaultdict(float)
    for a, b in zip(cfgs_a, cfgs_b):
        ra, rb = run_dir(a), run_dir(b)
        assert ra.status() == rb.status() == ("ok", ""), (a.id, ra.status(), rb.status())
        for x, y in zip(ra.metrics(), rb.metrics(), strict=True):
            for key in ("train_loss", "train_acc", "test_loss", "test_acc", "lr"):
                worst_m[key] = max(worst_m[key], abs(x[key] - y[key]))
        wa, wb = load_file(ra.ckpt_path(a.trainer.max_epochs)), load_file(rb.ckpt_path(b.trainer.max_epochs))
        bitwise += all(torch.equal(wa[k], wb[k]) for k in wa)
        worst_w = max(worst_w, max((wa[k] - wb[k]).abs().max().item() for k in wa))
    metrics = ", ".join(f"{k} {v:.1e}" for k, v in worst_m.items())
    return (f"equivalence: {len(cfgs_a)}/{len(cfgs_a)} models ok in both; final weights bitwise equal for "
            f"{bitwise}; largest differences over all epochs: {metrics}; final weights {worst_w:.1e}")


def data_feed(x: torch.Tensor, y: torch.Tensor, k: int = 16, batch_size: int = 32, epochs: int = 5) -> str:
    """Time per epoch to draw K members' shuffled batches: K DataLoaders vs indexing tensors."""
    def loaders(epoch):
        gens = [torch.Generator().manual_seed(epoch_seed(seed, epoch)) for seed in range(k)]
        for batches in zip(*(DataLoader(TensorDataset(x, y), batch_size, shuffle=True, generator=g) for g in gens)):
            torch.stack([b[0] for b in batches]), torch.stack([b[1] for b in batches])

    def indexing(epoch):
        for idx in torch.stack([epoch_order(len(x), seed, epoch) for seed in range(k)]).split(batch_size, dim=1):
            x[idx], y[idx]

    seconds = {}
    for feed in (loaders, indexing):
        feed(0)  # warm-up: the first advanced indexing of a process costs ~0.5 s
        start = time.perf_counter()
        for epoch in range(epochs):
            feed(epoch)
        seconds[feed.__name__] = (time.perf_counter() - start) / epochs
    return (f"data, K={k} batch {batch_size}, per epoch: DataLoader(TensorDataset) x K "
            f"{seconds['loaders'] * 1e3:.1f} ms, indexing tensors {seconds['indexing'] * 1e3:.1f} ms "
            f"({seconds['loaders'] / seconds['indexing']:.0f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--root", type=Path, default=None, help="where both zoos are written (default: a temp dir)")
    args = parser.parse_args()
    root = args.root or Path(tempfile.mkdtemp(prefix="zoo-population-"))
    grid = ["zoo=demo", f"trainer.max_epochs={args.epochs}", f"paths.data={root / 'data'}"]
    cfgs = {side: cell_configs([*grid, f"paths.root={root / side}"]) for side in ("one_by_one", "population")}
    data = load(cfgs["population"][0].data, root / "data")  # generated once, outside the timings

    n = len(cfgs["population"])
    print(f"demo zoo: {n} models, {args.epochs} epochs, {os.cpu_count()} cores; runs in {root}")
    print(f"grouping:\n{describe(plan(cfgs['population'], workers=2))}")
    torch.set_num_threads(1)  # as each training worker
    print(data_feed(data.x_train, data.y_train))
    wall_a, secs_a = launch(root / "one_by_one", grid)
    print(f"one-by-one (Lightning, joblib launcher):  {wall_a:6.1f} s  {n / wall_a * 3600:8.0f} models/hour")
    wall_b, secs_b = launch(root / "population", [*grid, "hydra/launcher=population"])
    print(f"population (hydra/launcher=population):   {wall_b:6.1f} s  {n / wall_b * 3600:8.0f} models/hour")
    print(compare(cfgs["one_by_one"], cfgs["population"]))
    print("training seconds per model, by width (one-by-one / population = speedup):")
    for width in sorted(secs_a):
        a, b = sum(secs_a[width]) / len(secs_a[width]), sum(secs_b[width]) / len(secs_b[width])
        print(f"  width {width:3d}: {a:6.3f} / {b:6.3f} = {a / b:5.1f}x")
    print(f"speedup: {wall_a / wall_b:.1f}x")


if __name__ == "__main__":
    main()
