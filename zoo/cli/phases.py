"""`zoo-phases`: phase table + figures of a zoo, or of any metrics table (`metrics_csv=`)."""

from zoo.cli import front

SCRIPT = front.Script(
    "zoo-phases",
    "[metrics_csv=PATH] [key=value ...]",
    "Label every grid cell of a zoo with its loss-landscape phase (I, II, III, IV-A, IV-B; thresholds in\n"
    "conf/phases/) from its landscape metrics; write phases.csv, phases.json and the figures. With\n"
    "metrics_csv=PATH, re-label any table with the columns (the zoo's axes, train_loss, mc_loss_train, cka).",
    ["zoo-phases zoo=demo", "zoo-phases zoo=demo phases.train_loss=0.1", "zoo-phases metrics_csv=table.csv zoo=demo"],
)
SHOWN = (
    "n_models",
    "train_loss",
    "test_acc",
    "test_rel_l2",
    "hessian_top",
    "hessian_trace",
    "cka",
    "mc_loss_train",
)


def run(args: list[str]) -> None:
    from pathlib import Path

    from zoo.phases import PHASES
    from zoo.phases.table import relabel_csv, write_phases
    from zoo.summary import format_table
    from zoo.sweep import cell_configs, compose_config, fixed_overrides

    overrides = [f"phases.{o}" if o.startswith("metrics_csv=") else o for o in front.overrides_only(SCRIPT, args)]
    cfg = compose_config(fixed_overrides(overrides))
    csv = cfg.phases.metrics_csv
    if csv:
        out, rows = relabel_csv(Path(csv), cfg)
        axes = list(cfg.zoo.axes)
    else:
        cfgs = cell_configs(overrides)
        out, rows = write_phases(cfgs)
        axes = list(cfgs[0].zoo.axes)
    columns = [*axes, *(c for c in SHOWN if any(_known(r.get(c)) for r in rows)), "phase"]
    print(format_table(columns, [[r[c] if r[c] is not None else "-" for c in columns] for r in rows]))
    print("\nphase counts: " + ", ".join(f"{p} {sum(r['phase'] == p for r in rows)}" for p in (*PHASES, None)))
    print(f"phase table: {out}\nfigures: {out.parent / 'figures' if not csv else out.parent}")


def _known(value) -> bool:
    """A measured value: not missing, not NaN (a PINN zoo has no accuracy to show)."""
    return value is not None and value == value


def main(argv: list[str] | None = None) -> None:
    front.main(SCRIPT, run, argv)


if __name__ == "__main__":
    main()
