"""Real jobs on the one-node SLURM test cluster (slurm/testcluster, tests/slurm_cluster.py).

Run: bash slurm/testcluster/install.sh && python -m pytest -m slurm tests/test_slurm_cluster.py
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from helpers import wait_for

pytestmark = pytest.mark.slurm


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_sbatch_array_writes_one_file_per_task(slurm_cluster, tmp_path):
    script = tmp_path / "task.sh"
    # Each task also calls scontrol from inside the job: SLURM_CONF must reach it.
    script.write_text(
        "#!/bin/bash\n"
        'out="$1/out.$SLURM_ARRAY_TASK_ID"\n'
        'echo "conf=$SLURM_CONF" > "$out"\n'
        'scontrol show job "${SLURM_ARRAY_JOB_ID}_$SLURM_ARRAY_TASK_ID" | grep -o "JobState=[A-Z]*" >> "$out"\n'
    )
    job_id = slurm_cluster.sbatch("--array=0-3", "-o", str(tmp_path / "slurm-%A_%a.out"), str(script), str(tmp_path))
    states = slurm_cluster.wait(job_id, timeout=30)
    assert sorted(states) == [f"{job_id}_{i}" for i in range(4)]
    assert set(states.values()) == {"COMPLETED"}
    outs = sorted(tmp_path.glob("out.*"))
    assert [p.name for p in outs] == [f"out.{i}" for i in range(4)]
    for p in outs:
        assert p.read_text().splitlines() == [f"conf={slurm_cluster.conf}", "JobState=RUNNING"]


def test_submitit_map_array(slurm_cluster, tmp_path):
    submitit = pytest.importorskip("submitit")

    # Nested, so that cloudpickle ships it by value: the job's Python cannot
    # import this test module.
    def square_plus(x: int, y: int) -> int:
        return x * x + y

    executor = submitit.AutoExecutor(folder=tmp_path / "submitit")
    assert executor.cluster == "slurm"
    executor.update_parameters(slurm_partition=slurm_cluster.partition, timeout_min=2, cpus_per_task=1, mem_gb=1)
    jobs = executor.map_array(square_plus, [1, 2, 3], [10, 20, 30])
    assert len({j.job_id.split("_")[0] for j in jobs}) == 1  # one array job
    assert [j.result() for j in jobs] == [11, 24, 39]


def test_slurm_conf_reaches_jobs_without_export(slurm_cluster, tmp_path):
    # slurmd itself sets SLURM_CONF (to its own -f path) in every job, so SLURM
    # commands inside jobs work even with --export=NONE.
    out = tmp_path / "out"
    job_id = slurm_cluster.sbatch(
        "--export=NONE", "-o", str(out), "--wrap",
        'echo "conf=$SLURM_CONF"; scontrol show config | grep -E "^MaxArraySize"',
    )  # fmt: skip
    assert slurm_cluster.wait(job_id, timeout=30) == {job_id: "COMPLETED"}
    lines = _lines(out)
    assert lines[0] == f"conf={slurm_cluster.conf}"
    assert lines[1].split() == ["MaxArraySize", "=", str(slurm_cluster.max_array_size)]


def test_small_max_array_size_rejects_large_indices(slurm_cluster_small_arrays, tmp_path):
    cluster = slurm_cluster_small_arrays
    assert cluster.max_array_size == 4

    def sbatch(array: str) -> subprocess.CompletedProcess:
        return cluster.run(
            "sbatch", "--parsable", "-p", cluster.partition, f"--array={array}",
            "-o", "/dev/null", "--wrap", "true", check=False,
        )  # fmt: skip

    # MaxArraySize caps the task *index* (max index = MaxArraySize - 1), not the
    # count: 4 tasks numbered 5..8 are rejected as well, and a %throttle does not
    # help. A split array must renumber its tasks from 0 and offset into the grid.
    for array in ["0-9", "5-8", "4", "0-9%2"]:
        proc = sbatch(array)
        assert proc.returncode != 0, array
        assert "Invalid job array specification" in proc.stderr
    ok = sbatch("0-3")
    assert ok.returncode == 0, ok.stderr
    assert set(cluster.wait(ok.stdout.strip(), timeout=30).values()) == {"COMPLETED"}


@pytest.mark.slow  # waits on slurmctld's requeue (~10 s), and the signal order is asynchronous
def test_scontrol_requeue_runs_job_again(slurm_cluster, tmp_path):
    counter = tmp_path / "counter"
    script = tmp_path / "count.sh"
    # First run: count, then wait to be requeued. Second run: count and finish.
    script.write_text(
        "#!/bin/bash\n"
        'echo "restart=${SLURM_RESTART_COUNT:-0}" >> "$1"\n'
        'if [ "$(wc -l < "$1")" -lt 2 ]; then sleep 120; fi\n'
    )
    job_id = slurm_cluster.sbatch("-o", str(tmp_path / "out"), str(script), str(counter))
    wait_for(lambda: len(_lines(counter)) == 1, 20, "first run")
    slurm_cluster.run("scontrol", "requeue", job_id)
    # A requeued job may start again only after AuthInfo cred_expire (10 s here).
    assert slurm_cluster.wait(job_id, timeout=45) == {job_id: "COMPLETED"}
    assert _lines(counter) == ["restart=0", "restart=1"]


@pytest.mark.slow  # waits on slurmctld's requeue (~10 s), and the signal order is asynchronous
def test_submitit_preempted_job_requeues_itself(slurm_cluster, tmp_path):
    """submitit's signal handler calls `scontrol requeue` from inside the job.

    That needs SLURM_CONF inside the job (see the test above). Note that
    submitit itself breaks with `--export=NONE`: its srun step then lacks
    SUBMITIT_EXECUTOR and fails with "Could not figure out which environment".
    """
    submitit = pytest.importorskip("submitit")
    marker = tmp_path / "runs"

    def run_twice(path: str) -> int:
        import time as _time
        from pathlib import Path as _Path

        p = _Path(path)
        with p.open("a") as f:
            f.write("run\n")
        if len(p.read_text().splitlines()) < 2:
            _time.sleep(120)  # wait to be preempted
        return len(p.read_text().splitlines())

    executor = submitit.AutoExecutor(folder=tmp_path / "submitit")
    # timeout_min must exceed 10: submitit counts a signal as a *timeout* when the
    # job has run min(0.8 * limit, limit - 10 min), which is negative below 10 min,
    # and does not requeue a timed-out job that is not checkpointable.
    executor.update_parameters(slurm_partition=slurm_cluster.partition, timeout_min=60, cpus_per_task=1, mem_gb=1)
    job = executor.submit(run_twice, str(marker))
    wait_for(lambda: len(_lines(marker)) == 1, 30, "first run")
    # What a preemption sends (as submitit's job._interrupt() does): SIGTERM, then USR2 -> requeue.
    # slurmd delivers signals asynchronously: back to back, a late SIGTERM could kill the
    # `scontrol requeue` that USR2's handler starts (seen once under load), so let it land first.
    slurm_cluster.run("scancel", "--signal", "SIGTERM", str(job.job_id))
    time.sleep(1)
    slurm_cluster.run("scancel", "--signal", "USR2", str(job.job_id))
    wait_for(lambda: len(_lines(marker)) == 2, 60, "second run")
    assert slurm_cluster.wait(job.job_id, timeout=60) == {job.job_id: "COMPLETED"}
    assert job.result() == 2
