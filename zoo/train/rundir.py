"""The run directory of one model, `runs/<zoo>/models/<id>/` (contract in docs/design.md).

config.yaml                    resolved config, with `id` and `grid`
metrics.jsonl                  one line per epoch (epoch 0 = initialization)
ckpt/epoch_XXXX.safetensors    weights at the configured epochs
last.ckpt                      Lightning resume state (internal, never shipped)
status                         `ok`, `diverged` or `failed`, then a reason line
DONE                           written last; a run with DONE is never touched again
.lock                          flock'ed by the process training the model (zoo.lock)
"""

import json
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from zoo.atomic import write_text
from zoo.lock import hold

STATES = ("ok", "diverged", "failed")
HEADLINE = ("test_acc", "test_rel_l2", "test_loss")  # classifiers, PINNs, language models


def headline(row: dict) -> tuple[str, float | None]:
    """The metric a run is summed up by, and its value in a metrics line (None when absent)."""
    key = next((k for k in HEADLINE if k in row), HEADLINE[0])
    return key, row.get(key)


def zoo_dir(runs_root: str | Path, zoo: str) -> Path:
    """`runs/<zoo>/`: where every stage of a zoo writes (models/, pairs/, apply/, figures/, phases.*)."""
    return Path(runs_root) / zoo


def zoo_dir_of(cfg: DictConfig) -> Path:
    """The zoo folder of the model (or sweep) `cfg` describes, absolute."""
    return zoo_dir(Path(cfg.paths.runs).resolve(), cfg.zoo.name)


def checkpoint_epochs(cfg: DictConfig) -> set[int]:
    """`checkpoint.epochs` (a list) ∪ every `checkpoint.every`-th epoch ∪ the final epoch."""
    last = cfg.trainer.max_epochs
    epochs = {e for e in cfg.checkpoint.epochs or [] if 0 <= e <= last} | {last}
    if cfg.checkpoint.every:
        epochs |= set(range(0, last + 1, cfg.checkpoint.every))
    return epochs


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def id(self) -> str:
        return self.path.name

    config_path = property(lambda self: self.path / "config.yaml")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")
    last_ckpt = property(lambda self: self.path / "last.ckpt")
    status_path = property(lambda self: self.path / "status")
    done_path = property(lambda self: self.path / "DONE")
    lock_path = property(lambda self: self.path / ".lock")  # held while a process trains the model

    def lock(self):
        """Context manager: this process alone works in the run dir; zoo.lock.Locked if another does."""
        return hold(self.lock_path, wait=False, what=f"model {self.id}")

    def ckpt_path(self, epoch: int) -> Path:
        return self.path / "ckpt" / f"epoch_{epoch:04d}.safetensors"

    def checkpoints(self) -> dict[int, Path]:
        """Saved checkpoint files by epoch, ascending."""
        found = {int(p.stem.split("_")[1]): p for p in (self.path / "ckpt").glob("epoch_*.safetensors")}
        return dict(sorted(found.items()))

    def is_done(self) -> bool:
        return self.done_path.exists()

    def config(self) -> DictConfig:
        return OmegaConf.load(self.config_path)

    def write_config(self, cfg: DictConfig) -> None:
        write_text(self.config_path, OmegaConf.to_yaml(cfg, resolve=True))

    # -- status ---------------------------------------------------------------
    def status(self) -> tuple[str, str]:
        """`(state, reason)`; state is `missing` before the first status, `running` if started."""
        if not self.status_path.exists():
            return ("running", "") if self.config_path.exists() else ("missing", "")
        state, _, reason = self.status_path.read_text().partition("\n")
        return state.strip(), reason.strip()

    def write_status(self, state: str, reason: str = "") -> None:
        assert state in STATES, state
        write_text(self.status_path, f"{state}\n{reason}\n" if reason else f"{state}\n")

    def mark_done(self) -> None:
        write_text(self.done_path, "")

    # -- metrics --------------------------------------------------------------
    def metrics(self) -> list[dict]:
        """Complete lines of metrics.jsonl (a line cut by a crash is ignored)."""
        if not self.metrics_path.exists():
            return []
        rows = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
        return rows

    def append_metrics(self, row: dict) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def truncate_metrics(self, last_epoch: int) -> None:
        """Keep lines up to `last_epoch`: on resume, drop epochs the checkpoint does not contain."""
        rows = [r for r in self.metrics() if r["epoch"] <= last_epoch]
        write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows))


def run_dir(cfg: DictConfig) -> RunDir:
    """The run dir of the model `cfg` (with `id`) describes."""
    return RunDir(zoo_dir_of(cfg) / "models" / cfg.id)


def list_runs(runs_root: str | Path, zoo: str) -> list[RunDir]:
    models = zoo_dir(runs_root, zoo) / "models"
    return [RunDir(p) for p in sorted(models.iterdir()) if p.is_dir()] if models.exists() else []
