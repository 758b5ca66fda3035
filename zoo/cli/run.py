"""`zoo-run`: the whole pipeline for a zoo (default: the offline `demo` zoo)."""

from zoo.cli import front

SCRIPT = front.Script(
    "zoo-run",
    "[key=value ...]",
    "The whole pipeline of a zoo (default: the offline demo zoo): train, landscape, phases, the merging\n"
    "apps (apply.apps), pack, verify, HDF5. Every stage skips finished work and resumes the rest.",
    [
        "zoo-run",
        "zoo-run zoo=demo model.width=8,16 trainer.max_epochs=3 'apply.apps=[lmc]'",
        "zoo-run zoo=mine --config-dir ./myconf hydra/launcher=slurm cluster=local",
    ],
)


def run(args: list[str]) -> int:
    import logging

    from zoo.pipeline import run_pipeline

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    return run_pipeline(front.overrides_only(SCRIPT, args))


def main(argv: list[str] | None = None) -> None:
    front.main(SCRIPT, run, argv)


if __name__ == "__main__":
    main()
