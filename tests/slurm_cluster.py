"""Pytest plugin: a real one-node SLURM cluster on localhost for tests.

Loaded by tests/conftest.py (``pytest_plugins = ["slurm_cluster"]``). It provides:

``slurm_cluster`` (session)
    Starts the cluster with ``slurm/testcluster/start.sh`` in ``$ZOO_SLURM_DIR``
    (default ``/tmp/zoo-slurm``), or reuses one already running there, and sets
    ``os.environ["SLURM_CONF"]``. Skips the test when SLURM is not installed.
    If this session started the cluster it stops it at the end, unless
    ``ZOO_SLURM_KEEP=1`` (keeping it makes the next run ~0.5 s faster).
    MaxArraySize is ``$ZOO_SLURM_MAX_ARRAY_SIZE`` or SLURM's default, 1001.

``slurm_cluster_small_arrays`` (function)
    The same cluster with ``MaxArraySize=4`` (array indices 0..3 only), for
    array-splitting tests. Switching restarts slurmctld (~2 s; running jobs
    survive). The switch back happens lazily, before the next test that uses
    ``slurm_cluster`` without ``slurm_cluster_small_arrays`` and at the end of
    the session, so consecutive small-array tests pay once.

There is one cluster per state dir, and MaxArraySize is cluster-wide: ``slurm_cluster`` holds
``<state dir>.lock`` for the whole session, so pytest-xdist workers (and concurrent sessions) that
use the cluster take turns.

Accounting is off, so ``sacct`` does not work: use ``SlurmCluster.wait`` /
``job_states``, which read ``scontrol show job`` (finished jobs stay visible
for MinJobAge = 300 s).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import wait_for

from zoo.lock import hold

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "slurm" / "testcluster"
PARTITION = "debug"
DEFAULT_MAX_ARRAY_SIZE = 1001
SMALL_MAX_ARRAY_SIZE = 4
SKIP_MSG = "SLURM not installed: run bash slurm/testcluster/install.sh && bash slurm/testcluster/start.sh"

# States after which a job will not run again by itself. SPECIAL_EXIT and
# REQUEUE_HOLD are held requeues: waiting longer would only time out.
FINAL_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "OUT_OF_MEMORY",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "SPECIAL_EXIT",
        "REQUEUE_HOLD",
    }
)

# Debian installs the daemons in /usr/sbin, which a non-root PATH may lack.
_SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def slurm_installed() -> bool:
    return bool(shutil.which("sinfo") and shutil.which("slurmctld", path=_SBIN_PATH))


def default_state_dir() -> Path:
    return Path(os.environ.get("ZOO_SLURM_DIR", "/tmp/zoo-slurm"))


def _alive(pidfile: Path, name: str) -> bool:
    try:
        pid = int(pidfile.read_text().strip())
        return Path(f"/proc/{pid}/comm").read_text().strip() == name
    except (OSError, ValueError):
        return False


def cluster_running(state_dir: Path) -> bool:
    run = state_dir / "run"
    return _alive(run / "slurmctld.pid", "slurmctld") and _alive(run / "slurmd.pid", "slurmd")


@dataclass
class SlurmCluster:
    """Handle on the running test cluster."""

    state_dir: Path
    conf: Path
    max_array_size: int
    default_max_array_size: int = DEFAULT_MAX_ARRAY_SIZE
    partition: str = PARTITION
    started_here: bool = False

    @property
    def env(self) -> dict[str, str]:
        """os.environ plus SLURM_CONF, for subprocesses."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a SLURM client command (sbatch, scontrol, ...) against this cluster."""
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def sbatch(self, *args: str) -> str:
        """``sbatch --parsable -p debug ARGS``; returns the job id."""
        out = self.run("sbatch", "--parsable", "-p", self.partition, *args).stdout
        return out.strip().split(";")[0]

    def job_states(self, job_id: str | int) -> dict[str, str]:
        """{"<id>" or "<array id>_<task>": state} from ``scontrol show job``.

        Pending array tasks not yet split off appear under one key such as
        ``"12_2-9%2"``. Empty once the job has been purged (MinJobAge) or if the id
        never existed.
        """
        proc = self.run("scontrol", "-o", "show", "job", str(job_id), check=False)
        states: dict[str, str] = {}
        for line in proc.stdout.splitlines():
            fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
            if "JobId" not in fields:
                continue
            key = fields["JobId"]
            if fields.get("ArrayTaskId"):
                key = f"{fields['ArrayJobId']}_{fields['ArrayTaskId']}"
            states[key] = fields.get("JobState", "UNKNOWN")
        return states

    def wait(self, job_id: str | int, timeout: float = 60, poll: float = 0.25) -> dict[str, str]:
        """Wait until every task of ``job_id`` is in a final state; return job_states()."""
        states: dict[str, str] = {}

        def finished() -> bool:
            states.clear()
            states.update(self.job_states(job_id))
            return all(s in FINAL_STATES for s in states.values())

        try:
            wait_for(finished, timeout, f"job {job_id} to finish", poll)
        except TimeoutError as e:
            raise TimeoutError(f"{e} (states: {states})") from None
        return states

    def set_max_array_size(self, value: int) -> None:
        """Restart slurmctld with another MaxArraySize (no-op if unchanged)."""
        if value != self.max_array_size:
            _start(self.state_dir, value)
            self.max_array_size = value


def _start(state_dir: Path, max_array_size: int) -> Path:
    """Run start.sh; return the SLURM_CONF path it prints."""
    env = {**os.environ, "ZOO_SLURM_MAX_ARRAY_SIZE": str(max_array_size)}
    proc = subprocess.run(
        ["bash", str(SCRIPTS / "start.sh"), str(state_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    if proc.returncode != 0:
        pytest.fail(f"slurm/testcluster/start.sh failed:\n{proc.stderr}", pytrace=False)
    for line in proc.stdout.splitlines():
        if line.startswith("export SLURM_CONF="):
            return Path(line.split("=", 1)[1])
    pytest.fail(f"start.sh printed no SLURM_CONF line:\n{proc.stdout}\n{proc.stderr}", pytrace=False)


@pytest.fixture(scope="session")
def slurm_cluster():
    if not slurm_installed():
        pytest.skip(SKIP_MSG)
    if os.geteuid() != 0 and not shutil.which("sudo"):
        pytest.skip("the SLURM test cluster needs root (or sudo) to start slurmd")
    state_dir = default_state_dir()
    # One pytest process at a time on the cluster (pytest-xdist workers, or two test sessions): its
    # MaxArraySize is cluster-wide and its 2 CPUs are shared. Another process's session is waited for.
    with hold(f"{state_dir}.lock", wait=True, what="the SLURM test cluster"):
        default_size = int(os.environ.get("ZOO_SLURM_MAX_ARRAY_SIZE", DEFAULT_MAX_ARRAY_SIZE))
        was_running = cluster_running(state_dir)
        conf = _start(state_dir, default_size)  # no-op if already up with this config
        old_conf = os.environ.get("SLURM_CONF")
        os.environ["SLURM_CONF"] = str(conf)
        cluster = SlurmCluster(state_dir, conf, default_size, default_size, started_here=not was_running)
        try:
            yield cluster
        finally:
            if cluster.started_here and os.environ.get("ZOO_SLURM_KEEP") != "1":
                subprocess.run(["bash", str(SCRIPTS / "stop.sh"), str(state_dir)], capture_output=True, timeout=120)
            else:
                # Leave a cluster we reused as we found it.
                cluster.set_max_array_size(default_size)
            if old_conf is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = old_conf


@pytest.fixture
def slurm_cluster_small_arrays(slurm_cluster: SlurmCluster) -> SlurmCluster:
    """The test cluster with MaxArraySize=4: `--array` indices above 3 are rejected."""
    slurm_cluster.set_max_array_size(SMALL_MAX_ARRAY_SIZE)
    return slurm_cluster


@pytest.fixture(autouse=True)
def _slurm_default_array_size(request):
    """Before a test that wants the normal cluster, undo a small-array switch."""
    names = request.fixturenames
    if "slurm_cluster" in names and "slurm_cluster_small_arrays" not in names:
        cluster = request.getfixturevalue("slurm_cluster")
        cluster.set_max_array_size(cluster.default_max_array_size)
    yield
