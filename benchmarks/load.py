"""Loading speed of a packed zoo, against the reference layout and the disk, on the same zoo.

Writes two zoos in the reference study's layout (per-model folders, `torch.save`d state dicts),
a small-model one and a ≥1M-parameter one, imports each into shards with `zoo-import`'s
code, then reads every checkpoint as a flat float32 vector three ways:

  (a) reference: per-checkpoint `torch.load(weights_only=True)`, as users of those zoos do;
  open_zoo:      `zoo.load.open_zoo(manifest, view="flat")`;
  (b) raw:       `cat <shards> > /dev/null`, sequential reading of the same bytes: the limit.

Files are read from the page cache (each measurement is the best of --repeats after a
warm-up), so this measures the software, not the disk. Last line: `speedup: <x>x`,
open_zoo over (a) on the small-model zoo. Targets: ≥ 5x over (a) for small models,
≥ 50 % of raw bandwidth for ≥ 1M parameters.

    python benchmarks/load.py [--small-models 100 --large-models 4 --epochs 8 --repeats 3]
"""

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from zoo.load import open_zoo
from zoo.load.views import flat
from zoo.models import build
from zoo.pack import import_reference


def write_reference_zoo(root: Path, *, models: int, epochs: int, width: int) -> int:
    """`models` MLPs of `width` in the reference layout, `epochs` checkpoints each; returns n_params."""
    for seed in range(models):
        folder = root / f"NN_tune_trainable_{seed:05d}_seed={seed}"
        folder.mkdir(parents=True)
        params = {"model::type": "mlp", "model::width": width, "seed": seed, "optim::lr": 0.1}
        (folder / "params.json").write_text(json.dumps(params))
        (folder / "result.json").write_text(
            "".join(
                json.dumps({"training_iteration": e, "train_loss": 1.0 / (e + 1), "test_acc": 0.1 * e}) + "\n"
                for e in range(epochs)
            )
        )
        torch.manual_seed(seed)
        model = build({"name": "mlp", "in_dim": 40, "out_dim": 10, "width": width})
        for epoch in range(epochs):
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.01 * torch.randn_like(p))
            (folder / f"checkpoint_{epoch:06d}").mkdir()
            torch.save(model.state_dict(), folder / f"checkpoint_{epoch:06d}" / "checkpoints")
    return sum(p.numel() for p in model.parameters())


def read_reference(root: Path) -> int:
    """Every checkpoint of a reference-layout zoo as a flat vector, with its folder's params and results."""
    n = 0
    for folder in sorted(root.iterdir()):
        json.loads((folder / "params.json").read_text())
        [json.loads(line) for line in (folder / "result.json").read_text().splitlines()]
        for ckpt in sorted(folder.glob("checkpoint_*/checkpoints")):
            flat(torch.load(ckpt, map_location="cpu", weights_only=True))
            n += 1
    return n


def read_shards(manifest: Path) -> int:
    return sum(1 for _ in open_zoo(manifest, view="flat"))


def read_raw(shards: list[Path]) -> int:
    subprocess.run(["cat", *map(str, shards)], stdout=subprocess.DEVNULL, check=True)
    return len(shards)


def best_time(fn, arg, repeats: int) -> float:
    fn(arg)  # warm-up: page cache, imports
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(arg)
        times.append(time.perf_counter() - start)
    return min(times)


def bench_zoo(tmp: Path, name: str, *, models: int, epochs: int, width: int, repeats: int) -> float:
    ref = tmp / name / "reference"
    n_params = write_reference_zoo(ref, models=models, epochs=epochs, width=width)
    manifest = tmp / name / f"{name}.json"
    import_reference(ref, name, tmp / name / "shards", manifest)
    shards = sorted((tmp / name / "shards").glob("*.tar"))
    samples = models * epochs
    shard_mb = sum(p.stat().st_size for p in shards) / 1e6
    ref_mb = sum(p.stat().st_size for p in ref.glob("*/checkpoint_*/checkpoints")) / 1e6
    t_ref = best_time(read_reference, ref, repeats)
    t_zoo = best_time(read_shards, manifest, repeats)
    t_raw = best_time(read_raw, shards, repeats)
    print(
        f"zoo {name}: {samples} samples of {n_params:,} params (MLP width {width}); "
        f"shards {shard_mb:.1f} MB in {len(shards)} files, reference checkpoints {ref_mb:.1f} MB"
    )
    print(f"  (a) reference torch.load  {samples / t_ref:10.0f} samples/s  {ref_mb / t_ref:8.1f} MB/s")
    print(
        f"      open_zoo flat         {samples / t_zoo:10.0f} samples/s  {shard_mb / t_zoo:8.1f} MB/s  "
        f"= {t_ref / t_zoo:.1f}x (a)"
    )
    print(
        f"  (b) raw cat > /dev/null   {samples / t_raw:10.0f} samples/s  {shard_mb / t_raw:8.1f} MB/s  "
        f"open_zoo at {100 * t_raw / t_zoo:.0f} % of raw"
    )
    return t_ref / t_zoo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small-models", type=int, default=100)
    parser.add_argument("--large-models", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        speedup = bench_zoo(
            Path(tmp), "small", models=args.small_models, epochs=args.epochs, width=16, repeats=args.repeats
        )
        bench_zoo(Path(tmp), "large", models=args.large_models, epochs=args.epochs, width=1000, repeats=args.repeats)
    print(f"speedup: {speedup:.1f}x")


if __name__ == "__main__":
    main()
