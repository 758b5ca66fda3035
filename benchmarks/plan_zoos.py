"""zoo-plan's device-hours for the 12 reference zoos on a cluster profile: README's table, made by
the plan itself (zoo.plan.plan_zoo, as `zoo-plan zoo=<name> cluster=<profile>` prints it), with
nothing trained yet (an empty runs folder), with and without `runtime.compile=true`.

Columns: models; array tasks (one per population, one per model trained alone); FLOPs alone (the
FLOP term at MFU, each model at its trainer.precision's peak: a floor no population or captured
step goes below); one by one; with populations; with populations and runtime.compile (PINNs train
eagerly: none); one by one / the best of the two. Then the same for the 8 ResNet zoos together.

    python benchmarks/plan_zoos.py [--cluster example_gpu] [OVERRIDE ...]

Overrides apply to every zoo, e.g. `trainer.precision=bf16-mixed`: what every zoo would cost trained
at bf16 (not the reference's precision for the image zoos).
"""

import argparse
import tempfile

from zoo.plan import plan_zoo

REFERENCE_ZOOS = [
    *(f"{data}_resnet{depth}" for data in ("cifar10", "cifar100", "svhn", "tinyimagenet") for depth in (18, 50)),
    "cifar10_vit",
    "cifar100_vit",
    "owt_gpt2",
    "convection_pinn",
]


def hours(h: float) -> str:
    return f"{h:,.0f}" if h >= 1000 else f"{h:.3g}"


def figures(zoo: str, cluster: str, root: str, extra: list[str]) -> dict:
    overrides = [f"zoo={zoo}", f"cluster={cluster}", f"paths.root={root}", *extra]
    plan = plan_zoo(overrides)
    row = {
        "models": len(plan.cells),
        "tasks": len(plan.submission.tasks),
        "floor": sum(map(plan.flop_hours, plan.cells)),
        "alone": sum(plan.hours(c, population=False) for c in plan.cells),
        "populations": sum(map(plan.hours, plan.cells)),
        "compiled": None,
    }
    if plan.cells[0].cfg.data.get("task") != "pinn":
        compiled = plan_zoo([*overrides, "runtime.compile=true"])
        row["compiled"] = sum(map(compiled.hours, compiled.cells))
    row["best"] = min(h for h in (row["populations"], row["compiled"]) if h is not None)
    row["peaks"] = sorted({str(c.cfg.trainer.precision) for c in plan.cells})
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cluster", default="example_gpu")
    parser.add_argument("overrides", nargs="*", help="applied to every zoo, e.g. trainer.precision=bf16-mixed")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="zoo-plan-table-")
    rows = {zoo: figures(zoo, args.cluster, root, args.overrides) for zoo in REFERENCE_ZOOS}
    print(
        "| zoo | precision | models | array tasks | FLOPs alone | device-hours one by one | with populations "
        "| + runtime.compile | one by one / best |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for zoo, r in rows.items():
        compiled = "—" if r["compiled"] is None else hours(r["compiled"])
        print(
            f"| {zoo} | {', '.join(r['peaks'])} | {r['models']:,} | {r['tasks']:,} | {hours(r['floor'])} | "
            f"{hours(r['alone'])} | {hours(r['populations'])} | {compiled} | {r['alone'] / r['best']:.2f}x |"
        )
    total = {key: sum(r[key] or 0 for r in rows.values()) for key in ("models", "floor", "alone", "best")}
    pops = sum(r["populations"] for r in rows.values())
    compiled = sum(r["compiled"] if r["compiled"] is not None else r["populations"] for r in rows.values())
    print(
        f"| all {len(rows)} | | {total['models']:,} | | {hours(total['floor'])} | {hours(total['alone'])} | "
        f"{hours(pops)} | {hours(compiled)} | {total['alone'] / total['best']:.2f}x |"
    )
    resnets = [r for zoo, r in rows.items() if "_resnet" in zoo]
    alone = sum(r["alone"] for r in resnets)
    parts = {
        "populations": sum(r["populations"] for r in resnets),
        "populations with captured steps": sum(r["compiled"] for r in resnets),
        "floor": sum(r["floor"] for r in resnets),
    }
    print(
        f"The {len(resnets)} ResNet zoos: one by one {hours(alone)} device-hours, "
        + ", ".join(f"{name} {hours(h)} ({h / alone:.2f})" for name, h in parts.items())
    )


if __name__ == "__main__":
    main()
