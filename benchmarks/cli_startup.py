"""Start-up of the commands a user runs first: `zoo-plan` and `zoo-status` on the demo, and
`zoo-plan` on each of the 12 reference zoos (issue 17's budget: <= 2 s and <= 10 s).

Each command runs as a fresh process (`python -m zoo.cli.<x>`, what the console script runs), in
an empty runs folder; wall seconds are the best of `--repeat` runs (the least disturbed by other
load), and next to them the CPU seconds (user + system) of that process, which load from other
processes hardly changes: on an idle machine wall ~ CPU. The reference, timed in the same run: a
process that only imports torch, what every command paid before it was made lazy.

    python benchmarks/cli_startup.py [--repeat 3] [--quick]   (--quick: the demo lines only)
"""

import argparse
import resource
import subprocess
import sys
import tempfile
import time

REFERENCE_ZOOS = [
    *(f"{data}_resnet{depth}" for data in ("svhn", "cifar10", "cifar100", "tinyimagenet") for depth in (18, 50)),
    "cifar10_vit",
    "cifar100_vit",
    "owt_gpt2",
    "convection_pinn",
]


def best_of(command: list[str], repeat: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of the fastest of `repeat` runs."""
    runs = []
    for _ in range(repeat):
        before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        after, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter() - start
        runs.append((wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime))
    return min(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="the demo lines only")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="zoo-startup-")
    python = [sys.executable]
    torch, torch_cpu = best_of([*python, "-c", "import torch"], args.repeat)
    print(f"reference: python -c 'import torch': {torch:.2f} s wall, {torch_cpu:.2f} s CPU")
    runs = [
        ("zoo-plan zoo=demo", ["plan", "zoo=demo"], 2),
        ("zoo-status zoo=demo", ["status", "zoo=demo"], 2),
    ]
    if not args.quick:
        runs += [
            (f"zoo-plan zoo={z} cluster=example_gpu", ["plan", f"zoo={z}", "cluster=example_gpu"], 10)
            for z in REFERENCE_ZOOS
        ]
    cpus = []
    for name, (cli, *overrides), budget in runs:
        seconds, cpu = best_of([*python, "-m", f"zoo.cli.{cli}", *overrides, f"paths.root={root}"], args.repeat)
        cpus.append(cpu)
        verdict = "within" if max(seconds, cpu) <= budget else "OVER"
        print(
            f"{name}: {seconds:.2f} s wall, {cpu:.2f} s CPU ({cpu / torch_cpu:.2f}x the CPU of importing torch; "
            f"{verdict} the {budget} s budget)"
        )
    print(f"speedup: {torch_cpu / cpus[0]:.1f}x (CPU of zoo-plan zoo=demo against a process that only imports torch)")


if __name__ == "__main__":
    main()
