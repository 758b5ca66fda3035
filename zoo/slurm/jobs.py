"""What SLURM knows about a zoo's jobs, and which array task holds which work.

Every submitted array leaves a record, `runs/<zoo>/slurm/arrays/<job id>.json`: its stage
(train, landscape), submitit folder and, per array task, the keys of its work (model ids or
landscape outputs). With `squeue` that says which work is pending or running right now, so
a relaunch never submits it twice and `zoo-status` can name the log of a task that died.
"""

import getpass
import json
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from submitit.core.utils import JobPaths

from zoo.atomic import write_json

DEFAULT_MAX_ARRAY_SIZE = 1001  # SLURM's default MaxArraySize
# States squeue may still show for a moment after a job ended; such a job holds no work.
ENDED = frozenset(
    {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}
)

Queue = dict[tuple[str, int], tuple[str, str]]  # (job id, array task) -> (state, reason)


class SlurmError(RuntimeError):
    """A SLURM command failed."""


def _slurm(*cmd: str) -> str:
    if shutil.which(cmd[0]) is None:
        raise SlurmError(
            f"{cmd[0]} not found: hydra/launcher=slurm needs SLURM's commands on this machine "
            "(or the test cluster, slurm/testcluster/README.md)"
        )
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise SlurmError(
            f"{' '.join(cmd)} failed: {proc.stderr.strip() or proc.returncode} "
            "(is SLURM_CONF set, and slurmctld reachable?)"
        )
    return proc.stdout


def max_array_size() -> int:
    """The cluster's MaxArraySize: array task indices must stay below it."""
    for line in _slurm("scontrol", "show", "config").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "MaxArraySize":
            return int(value)
    return DEFAULT_MAX_ARRAY_SIZE


def queue(name: str) -> Queue:
    """This user's queued and running jobs named `name`, one entry per array task."""
    out = _slurm(
        "squeue", "--noheader", "--array", "--user", getpass.getuser(), "--name", name, "--format", "%F|%K|%T|%r"
    )
    tasks = {}
    for line in out.splitlines():
        job, task, state, reason = line.strip().split("|", 3)
        if state not in ENDED:
            tasks[job, 0 if task == "N/A" else int(task)] = (state, reason)
    return tasks


@dataclass
class Record:
    """One submitted array (or single job, when it had one task)."""

    job_id: str
    stage: str
    folder: str
    tasks: list[list[str]]

    def task_name(self, task: int) -> str:
        return f"{self.job_id}_{task}" if len(self.tasks) > 1 else self.job_id

    def log(self, task: int) -> Path:
        """The task's stderr, where a traceback or SLURM's kill message ends up."""
        return JobPaths(self.folder, job_id=self.task_name(task), task_id=0).stderr


def records_dir(zoo_dir: str | Path) -> Path:
    return Path(zoo_dir) / "slurm" / "arrays"


def write_record(zoo_dir: str | Path, record: Record) -> None:
    write_json(records_dir(zoo_dir) / f"{record.job_id}.json", asdict(record))


def read_records(zoo_dir: str | Path, stage: str) -> list[Record]:
    """The zoo's records of `stage`, oldest first."""
    found = [Record(**json.loads(p.read_text())) for p in records_dir(zoo_dir).glob("*.json")]
    return sorted((r for r in found if r.stage == stage), key=lambda r: int(r.job_id))


def latest_tasks(records: list[Record]) -> dict[str, tuple[Record, int]]:
    """key -> (record, task index) of the last submission that held it."""
    return {key: (record, i) for record in records for i, keys in enumerate(record.tasks) for key in keys}


def queued(zoo_dir: str | Path, stage: str, live: Queue) -> dict[str, str]:
    """key -> job id, for the work of `stage` that a pending or running task (in `live`) holds."""
    held = latest_tasks(read_records(zoo_dir, stage))
    return {key: record.job_id for key, (record, task) in held.items() if (record.job_id, task) in live}
