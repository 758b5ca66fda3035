"""Population training against one-by-one training, on the whole demo zoo, in one run.

Each side is what a user runs, on all cores (one worker process per core, one thread each):

  one-by-one:  zoo-train -m zoo=demo                             Lightning per model, joblib launcher
  population:  zoo-train -m zoo=demo hydra/launcher=population   zoo/train/grouping.py via Hydra
  population:  train_cells(cell_configs(["zoo=demo"]))           the same from Python: zoo-run's path

with the same grid (widths 2..256 x batch sizes 8..1000 x 2 seeds = 80 models) and the same
epochs: by default the zoo's own 100 (~4 min here); `--epochs 10` is a quick look, where the
populations' fixed costs (worker start, Lightning setup) weigh more. A Hydra multirun composes
every cell before launching (~0.1 s each, ~10 s for the demo zoo, whatever the launcher), which
zoo-run need not pay: it has the cells' configs already. Prints the grouping, models/hour, the
equivalence of the zoos (every metric and weight, model by model), the speedup per width
(training seconds per model: one-by-one as each model logs it, population as its population's
seconds / K), the speedup through Hydra and, last, `speedup: <x>x`: wall clock of the whole zoo,
launch to finish, one-by-one over zoo-run's population path. Also measures what feeding a
population's batches costs from DataLoaders against indexing tensors held on the device.

Unpadded members match one-by-one training bitwise; padded ones differ by float rounding, which
small models at small batches amplify: measured, a one-by-one run of width 4 / batch 8 whose
init was perturbed by 1e-7 (relative) ended 45% away (relative L2) after 10 epochs, at the
same test accuracy. The farthest model printed is such a case.

`--zoo convection_pinn` runs the same comparison on PINNs (zoo/train/population/pinn.py): the
smoke-sized convection zoo (`+smoke=on`: 64 points a full-batch step, 100 steps an epoch) on a
reduced grid, betas {1, 5, 10, 20, 30, 40, 50} x lrs {1e-4, 1e-3, 1e-2, 1e-1} x seeds {0, 1} = 56
models, 2 epochs by default (`--epochs`): one by one with zoo-train -m (Lightning's PINN module per
model, 2 joblib workers) against populations (the grid splits into one population per core).

`--zoo cifar10_resnet18` runs ResNet-18 populations (zoo/train/population/grouped.py) against the
project's one-by-one path (`train_model` per model: Lightning, as zoo-run trains a cell that does
not share) on the small-width, small-batch corner of the zoo: widths {2, 4, 8, 16} x batch sizes
{8, 16, 32, 64} x seeds {0, 1, 2} (a population is a cell's 3 seeds), on synthetic data in the
CIFAR-10 binary format (128 training images, 2 epochs by default), one thread, cell by cell with
the sides back to back in one process (`--device gpu`: on the GPU, same output). `--zoo cifar10_vit`
runs the same comparison on ViTs (zoo/train/population/vmapped.py), widths {12, 24, 48} x batch sizes
{16, 32, 64} by default (the zoo's smallest; its conf/recipe/vit.yaml otherwise). Prints per cell the
multiply-adds of a member step, seconds one by one and as the grouping trains it, and the ratio;
`--force` trains every cell as a population (the figures `zoo.train.grouping.CPU_MAX_MACS` is set
from), else the grouping decides per cell (runtime.population=auto). `--compile true` (or a backend
name) adds a third side: the populations with runtime.compile, compile time included. Last, zoo-plan's
cost model fitted per side to the cells' last epochs: the overhead of an optimizer step (zoo-plan's
`step_ms`, which a population is assumed to pay once for its K members) and the FLOP throughput
(`tflops` x `mfu`), measured on this device (`--images`: more steps per epoch, a tighter fit).

    python benchmarks/population.py [--zoo demo|convection_pinn|cifar10_resnet18|cifar10_vit] [--epochs N]
                                    [--root DIR] [--device cpu|gpu] [--force] [--compile off|true|BACKEND]
                                    [--images N] [--widths W,..] [--batch-sizes B,..]
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
from zoo.train.grouping import describe, net_sizes, population_key, populations, train_group
from zoo.train.rundir import run_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import zoo_files  # noqa: E402 - data sets written in their real on-disk formats

LOG_LINE = re.compile(r"(mlp-w(\d+)-b\d+-s\d+-[0-9a-f]{8}): ok .*\((?:population of (\d+), )?([\d.]+) s\)")


# The population path zoo-run takes (no Hydra multirun): compose the cells, train them as populations.
TRAIN_CELLS = (
    "import logging, sys; logging.basicConfig(level=logging.INFO); from zoo.sweep import cell_configs; "
    "from zoo.train.grouping import train_cells; train_cells(cell_configs(sys.argv[1:]))"
)


def launch(argv: list[str]) -> tuple[float, dict[int, list[float]]]:
    """Wall seconds of a training command, and the training seconds per model by width, from its log."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"{argv} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    per_width = defaultdict(list)
    for _, width, k, seconds in LOG_LINE.findall(proc.stdout + proc.stderr):
        per_width[int(width)].append(float(seconds) / int(k or 1))
    return wall, per_width


def compare(cfgs_a: list, cfgs_b: list) -> str:
    """Model-by-model agreement of two trainings of the same zoo: final weights (bitwise equal,
    else relative L2 distance) and the largest metric differences over all epochs."""
    distances, worst = [], defaultdict(float)
    for a, b in zip(cfgs_a, cfgs_b):
        ra, rb = run_dir(a), run_dir(b)
        assert ra.status() == rb.status() == ("ok", ""), (a.id, ra.status(), rb.status())
        for x, y in zip(ra.metrics(), rb.metrics(), strict=True):
            for key in (k for k in x if k not in ("epoch", "seconds")):  # classifiers: loss, acc; PINNs: terms
                worst[key] = max(worst[key], abs(x[key] - y[key]))
        wa, wb = load_file(ra.ckpt_path(a.trainer.max_epochs)), load_file(rb.ckpt_path(b.trainer.max_epochs))
        diff = sum((wa[k] - wb[k]).pow(2).sum() for k in wa).sqrt() / sum(wa[k].pow(2).sum() for k in wa).sqrt()
        distances.append((diff.item(), a.id))
    farthest, name = max(distances)
    metrics = ", ".join(f"{k} {v:.1e}" for k, v in worst.items())
    return (
        f"equivalence: {len(distances)}/{len(distances)} models ok in both; final weights bitwise equal for "
        f"{sum(d == 0 for d, _ in distances)}, within 1e-5 (relative L2) for "
        f"{sum(d < 1e-5 for d, _ in distances)}, farthest {name} at {farthest:.1e}\n"
        f"largest metric differences over all epochs and models: {metrics}"
    )


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
    return (
        f"data, K={k} batch {batch_size}, per epoch: DataLoader(TensorDataset) x K "
        f"{seconds['loaders'] * 1e3:.1f} ms, indexing tensors {seconds['indexing'] * 1e3:.1f} ms "
        f"({seconds['loaders'] / seconds['indexing']:.0f}x)"
    )


def three_sides(grid: list[str], root: Path, n: int, single: str) -> tuple[dict, dict, dict]:
    """Train the zoo `grid` three ways (one by one, populations through Hydra, populations through
    zoo-run's path), each under `root/<side>`: wall seconds, training seconds per width and the
    cells' configs per side."""
    train = ["-m", "zoo.cli.train", "-m"]
    runs = {
        "one_by_one": (f"one-by-one: zoo-train -m ({single}, joblib launcher)", [*train, *grid]),
        "hydra": ("population: zoo-train -m hydra/launcher=population", [*train, *grid, "hydra/launcher=population"]),
        "population": ("population: train_cells(cell_configs(...)) (zoo-run's path)", ["-c", TRAIN_CELLS, *grid]),
    }
    wall, secs = {}, {}
    for side, (label, argv) in runs.items():
        wall[side], secs[side] = launch([*argv, f"paths.root={root / side}"])
        print(f"{label:74s} {wall[side]:6.1f} s {n / wall[side] * 3600:7.0f} models/hour")
    return wall, secs, {side: cell_configs([*grid, f"paths.root={root / side}"]) for side in runs}


PINN_GRID = [
    "zoo=convection_pinn",
    "+smoke=on",
    "data.beta=1,5,10,20,30,40,50",
    "optim.lr=1e-4,1e-3,1e-2,1e-1",
    "seed=0,1",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zoo", choices=("demo", "convection_pinn", *NET_GRIDS), default="demo")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="cifar10_resnet18 / vit only")
    parser.add_argument("--force", action="store_true", help="cifar10_resnet18 / vit: every cell as a population")
    parser.add_argument(
        "--compile",
        default="off",
        help="cifar10_resnet18 / vit: also train the populations with runtime.compile=<this> (true: inductor)",
    )
    parser.add_argument("--widths", default=None, help="cifar10_resnet18 / vit: the grid's widths (NET_GRIDS)")
    parser.add_argument("--batch-sizes", default=None, help="cifar10_resnet18 / vit: the grid's batch sizes")
    parser.add_argument("--images", type=int, default=128, help="cifar10_resnet18 / vit: synthetic training images")
    parser.add_argument("--epochs", type=int, default=None, help="default: 100 (demo, its own), 2 (convection_pinn)")
    parser.add_argument("--root", type=Path, default=None, help="where both zoos are written (default: a temp dir)")
    args = parser.parse_args()
    root = args.root or Path(tempfile.mkdtemp(prefix="zoo-population-"))
    if args.zoo == "convection_pinn":
        return pinn(args.epochs or 2, root)
    if args.zoo in NET_GRIDS:
        return nets(args, root)
    args.epochs = args.epochs or 100
    grid = ["zoo=demo", f"trainer.max_epochs={args.epochs}", f"paths.data={root / 'data'}"]
    zoo = cell_configs([*grid, f"paths.root={root / 'population'}"])
    data = load(zoo[0].data, root / "data")  # generated once, outside the timings
    n = len(zoo)
    print(f"demo zoo: {n} models, {args.epochs} epochs, {os.cpu_count()} cores; runs in {root}")
    print(f"grouping:\n{describe(populations(zoo, workers=2))}")
    torch.set_num_threads(1)  # as each training worker
    print(data_feed(data.x_train, data.y_train))
    wall, secs, cfgs = three_sides(grid, root, n, "Lightning per model")
    print(compare(cfgs["one_by_one"], cfgs["population"]))
    finals = [
        [load_file(run_dir(cfg).ckpt_path(args.epochs)) for cfg in cfgs[side]] for side in ("hydra", "population")
    ]
    same = all(torch.equal(x[k], y[k]) for x, y in zip(*finals) for k in x)
    print(f"the two population runs ended with bitwise equal weights: {same}")
    print("training seconds per model, by width (one-by-one / population = speedup):")
    for width in sorted(secs["one_by_one"]):
        a, b = (sum(secs[side][width]) / len(secs[side][width]) for side in ("one_by_one", "population"))
        print(f"  width {width:3d}: {a:6.3f} / {b:6.3f} = {a / b:5.1f}x")
    print(
        f"speedup with hydra/launcher=population (Hydra composes every cell, ~0.1 s each): "
        f"{wall['one_by_one'] / wall['hydra']:.1f}x"
    )
    print(f"speedup: {wall['one_by_one'] / wall['population']:.1f}x")


def pinn(epochs: int, root: Path) -> None:
    """The PINN comparison (see the module doc): one-by-one vs populations, same grid, same cores."""
    grid = [*PINN_GRID, f"trainer.max_epochs={epochs}"]
    zoo = cell_configs([*grid, f"paths.root={root / 'population'}"])
    n = len(zoo)
    steps = zoo[0].data.steps_per_epoch * epochs
    print(
        f"convection_pinn smoke grid: {n} models, {epochs} epochs ({steps} full-batch Adam steps a model), "
        f"{os.cpu_count()} cores; runs in {root}"
    )
    print(f"grouping:\n{describe(populations(zoo, workers=2))}")
    wall, _, cfgs = three_sides(grid, root, n, "Lightning PINN module per model")
    print(compare(cfgs["one_by_one"], cfgs["population"]))
    print(
        f"speedup with hydra/launcher=population (Hydra composes every cell, ~0.1 s each): "
        f"{wall['one_by_one'] / wall['hydra']:.1f}x"
    )
    print(f"speedup: {wall['one_by_one'] / wall['population']:.1f}x")


N_TEST = 64  # synthetic CIFAR-10 test images of the cifar10_resnet18 / vit comparison
NET_GRID = ["seed=0,1,2", "data.eval_batch_size=256"]
NET_GRIDS = {"cifar10_resnet18": ("2,4,8,16", "8,16,32,64"), "cifar10_vit": ("12,24,48", "16,32,64")}  # widths, batches


def train_side(cfgs: list) -> float:
    """Wall seconds to train `cfgs` as the grouping groups them (`train_group`), in this process."""
    start = time.perf_counter()
    for group in populations(cfgs, workers=1):
        train_group(group)
    return time.perf_counter() - start


def last_epoch_seconds(cfgs: list) -> float:
    """Seconds of the last epoch of `cfgs` (a population's epoch counts once): training without
    start-up or compiling, which the first epoch pays."""
    return sum({run_dir(c).metrics()[-1]["seconds"] for c in cfgs})


def nets(args: argparse.Namespace, root: Path) -> None:
    """ResNet-18 or ViT populations vs one by one on the small cells (see the module doc)."""
    epochs, device, force, compile_backend = args.epochs or 2, args.device, args.force, args.compile
    if device == "gpu" and not torch.cuda.is_available():
        sys.exit(f"--device gpu: no CUDA device here (torch {torch.__version__}); run it where a GPU is")
    zoo_files.write_cifar10(root / "data", per_file=-(-args.images // 5), n_test=N_TEST)
    base = [
        f"zoo={args.zoo}",
        *NET_GRID,
        f"trainer.max_epochs={epochs}",
        f"data.n_train={args.images}",
        f"paths.data={root / 'data'}",
        f"runtime.accelerator={device}",
        "runtime.threads=1",
    ]
    widths, batch_sizes = args.widths or NET_GRIDS[args.zoo][0], args.batch_sizes or NET_GRIDS[args.zoo][1]
    grid = [*base, f"model.width={widths}", f"data.batch_size={batch_sizes}"]
    population = f"runtime.population={3 if force else 'auto'}"
    sides = {"one_by_one": ["runtime.population=off"], "population": [population]}
    if compile_backend != "off":
        sides["compiled"] = [population, f"runtime.compile={compile_backend}"]
    cfgs = {side: cell_configs([*grid, *flags, f"paths.root={root / side}"]) for side, flags in sides.items()}
    name = torch.cuda.get_device_name() if device == "gpu" else f"{os.cpu_count()} cores, 1 thread"
    print(
        f"{args.zoo} small cells: {len(cfgs['population'])} models, {epochs} epochs, {args.images} synthetic "
        f"CIFAR-10 images, {device} ({name}); load average {os.getloadavg()[0]:.1f}; runs in {root}"
    )
    torch.set_num_threads(1)
    # The first training of a process pays one-time costs (kernel set-up, first Trainer): outside the timings.
    for side in ("one_by_one", "population"):
        train_side(
            cell_configs(
                [
                    *base,
                    *sides[side],
                    f"model.width={widths.split(',')[0]}",
                    "data.batch_size=64",
                    f"paths.root={root / 'warm-up' / side}",
                ]
            )
        )
    # Cell by cell, the sides back to back in this process: load from other processes then weighs on
    # all sides alike, and no side pays for starting worker processes.
    seconds = defaultdict(dict)  # (width, batch) -> side -> wall seconds of training the cell's seeds
    last = defaultdict(dict)  # the same for the last epoch only
    by_cell = {side: _by_cell(cfgs[side]) for side in sides}
    cells = sorted(by_cell["population"])
    for cell in cells:
        for side in sides:
            todo = by_cell[side][cell]
            seconds[cell][side], last[cell][side] = train_side(todo), last_epoch_seconds(todo)
    print(
        "cell (width, batch): MACs of a member step, seconds one by one / population = ratio [trained as]"
        + (f"; compiled population ({compile_backend}, compile time included) = ratio" if "compiled" in sides else "")
    )
    for width, batch in cells:
        cfg, t = by_cell["population"][width, batch][0], seconds[width, batch]
        kind = "population K=3" if population_key(cfg) is not None else "one by one"
        line = (
            f"  w{width:<3d} b{batch:<3d} {net_sizes(cfg)[1] * batch / 2**20:8.1f} MMACs  "
            f"{t['one_by_one']:7.1f} / {t['population']:7.1f} s = {t['one_by_one'] / t['population']:4.2f}x  [{kind}]"
        )
        if "compiled" in sides:
            line += f"; {t['compiled']:7.1f} s = {t['one_by_one'] / t['compiled']:4.2f}x"
        print(line)
    wall = {side: sum(cell[side] for cell in seconds.values()) for side in sides}
    print(compare(cfgs["one_by_one"], cfgs["population"]))
    epoch = {side: sum(cell[side] for cell in last.values()) for side in sides}
    for side in sides:
        print(
            f"{side:10s} {wall[side]:7.1f} s {len(cfgs[side]) / wall[side] * 3600:7.0f} models/hour; "
            f"last epoch of every cell {epoch[side]:6.1f} s"
        )
    print(cost_model(last, by_cell))
    print(f"load average at the end: {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)")
    print(f"speedup: {wall['one_by_one'] / wall['population']:.2f}x")


def cost_model(last: dict, by_cell: dict) -> str:
    """zoo-plan's cost model (zoo/plan.py: a step costs step_ms + its FLOPs / (tflops x mfu), and a
    population pays step_ms once for its K members) fitted to the last epoch of every cell: seconds
    of an epoch = steps x overhead + FLOPs / throughput + a fixed cost per epoch (test evaluation call,
    checkpoint, metrics line, resume state: not in zoo-plan's model), by least squares on relative
    errors. FLOPs: 6 x the forward multiply-adds per training sample (2 per multiply-add; the backward
    costs twice the forward) and 2 x per test image, x K members. Each side is fitted on the cells it
    trained as populations (K = the cell's seeds) or one by one (K = 1); cells of the other kind are left
    out. Last, both fits predict these cells' epochs on the whole data set (CIFAR-10: 50,000 + 10,000
    images), where the fixed costs this benchmark's small epochs carry weigh nothing.
    `last`: (width, batch) -> side -> seconds of the last epoch (a population's counted once);
    `by_cell`: side -> (width, batch) -> the cell's configs, one per seed."""
    lines = [
        "zoo-plan's cost model fitted to the last epochs (one epoch: steps x overhead + FLOPs / throughput + fixed):"
    ]
    fits = {}
    for side, cells in by_cell.items():
        rows, seconds, k = [], [], 1
        for cell, cfgs in cells.items():
            shared = population_key(cfgs[0]) is not None
            if (side != "one_by_one") != shared:
                continue
            k = len(cfgs) if shared else 1
            rows.append(_epoch_terms(cfgs[0], cfgs[0].data.n_train, N_TEST, k))
            seconds.append(last[cell][side] * k / len(cfgs))  # one by one: the seeds' epochs are summed
        if len(rows) < 3:
            continue
        a = torch.tensor(rows, dtype=torch.float64) / torch.tensor(seconds, dtype=torch.float64)[:, None]
        fits[side] = torch.linalg.lstsq(a, torch.ones(len(rows), 1, dtype=torch.float64)).solution.flatten()
        errors = (a @ fits[side] - 1).abs()
        overhead, inverse, fixed = fits[side].tolist()
        lines.append(
            f"  {side:10s} K={k}: overhead {overhead * 1e3:6.2f} ms a step ({overhead * 1e3 / k:5.2f} ms a member), "
            f"throughput {1 / inverse / 1e9:5.1f} GFLOP/s, fixed {fixed:5.2f} s an epoch; {len(rows)} cells, "
            f"fit within {errors.median():.0%} (median), {errors.max():.0%} (max)"
        )
    if {"one_by_one", "population"} <= set(fits):
        alone = together = 0.0
        for cfgs in by_cell["population"].values():
            one = len(cfgs) * _predict(fits["one_by_one"], cfgs[0], 1)
            alone += one
            shared = population_key(cfgs[0]) is not None
            together += _predict(fits["population"], cfgs[0], len(cfgs)) if shared else one
        images = " + ".join(f"{n:,}" for n in FULL_CIFAR10)
        lines.append(f"  the fits at full epochs ({images} images), one by one / population: {alone / together:.2f}x")
    return "\n".join(lines)


FULL_CIFAR10 = (50_000, 10_000)  # training and test images


def _by_cell(cfgs: list) -> dict:
    """(width, batch) -> the cell's configs, in seed order."""
    cells = defaultdict(list)
    for cfg in sorted(cfgs, key=lambda c: c.seed):
        cells[cfg.model.width, cfg.data.batch_size].append(cfg)
    return dict(cells)


def _predict(fit: torch.Tensor, cfg, k: int) -> float:
    """Seconds of one full epoch of `cfg` (K members) by a fit of `cost_model`."""
    return float(torch.tensor(_epoch_terms(cfg, *FULL_CIFAR10, k), dtype=torch.float64) @ fit)


def _epoch_terms(cfg, n_train: int, n_test: int, k: int) -> list[float]:
    """(steps, FLOPs of K members, 1) of one epoch of `cfg`: the rows the cost model is fitted on."""
    batch, macs = cfg.data.batch_size, net_sizes(cfg)[1]
    return [-(-n_train // batch), k * macs * (6.0 * n_train + 2.0 * n_test), 1.0]


if __name__ == "__main__":
    main()
