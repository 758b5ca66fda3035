"""SLURM launcher and status logic against stand-in `squeue`/`scontrol`/`sbatch` commands, in
milliseconds: what is submitted, what is held, how a model's state reads. The real one-node
cluster runs the same paths end to end (test_slurm_launch.py, test_slurm_population.py)."""

import os
import stat
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from zoo.slurm import jobs
from zoo.slurm.status import model_states
from zoo.slurm.submit import submit_and_wait

SETTINGS = {
    "group_size": 2,
    "max_array_size": 100,
    "wait": False,
    "poll_s": 0.1,
    "_target_": "x",
    "timeout_min": 5,
    "cpus_per_task": 1,
    "mem_gb": 1,
    "partition": None,
}


class FakeSlurm:
    """`squeue` prints `self.queue_lines`; `scontrol show config` says MaxArraySize; `sbatch` logs its
    script and answers with job ids 1000, 1001, ..."""

    def __init__(self, bin_dir: Path):
        self.dir = bin_dir
        self.queue_file, self.sbatch_log = bin_dir / "queue.txt", bin_dir / "sbatch.log"
        self.queue_file.write_text("")
        self.script("squeue", f'cat "{self.queue_file}"')
        self.script("srun", "exit 0")  # submitit checks that it runs on a SLURM cluster
        self.script("scontrol", 'echo "MaxArraySize            = 3"')
        self.script(
            "sbatch",
            f'n=$(wc -l < "{self.sbatch_log}" 2>/dev/null || echo 0); echo "$@" >> "{self.sbatch_log}"; '
            'echo "Submitted batch job $((1000 + n))"',
        )

    def script(self, name: str, body: str) -> None:
        path = self.dir / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IEXEC)

    def set_queue(self, *lines: str) -> None:
        self.queue_file.write_text("".join(f"{line}\n" for line in lines))

    def submissions(self) -> int:
        return len(self.sbatch_log.read_text().splitlines()) if self.sbatch_log.exists() else 0


@pytest.fixture
def fake(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return FakeSlurm(bin_dir)


def submit(tmp_path, keys):
    settings = SETTINGS | {"submitit_folder": str(tmp_path / "logs")}
    submit_and_wait(
        settings,
        stage="train",
        zoo="demo",
        zoo_dir=tmp_path / "zoo",
        fn=print,
        work=[(k, k) for k in keys],
        progress=lambda q: "",
    )


def test_queue_parses_array_tasks_and_drops_ended_ones(fake):
    fake.set_queue("1000|0|PENDING|Priority", "1000|1|RUNNING|None", "1001|N/A|COMPLETED|None", "1002|2|FAILED|x")
    assert jobs.queue("zoo-demo") == {("1000", 0): ("PENDING", "Priority"), ("1000", 1): ("RUNNING", "None")}
    assert jobs.max_array_size() == 3


def test_work_is_grouped_into_arrays_under_the_clusters_max_array_size(fake, tmp_path, capsys):
    submit(tmp_path, [f"m{i}" for i in range(7)])  # 4 tasks of <= 2 items; MaxArraySize 3 -> 2 arrays
    records = jobs.read_records(tmp_path / "zoo", "train")
    assert [r.tasks for r in records] == [[["m0", "m1"], ["m2", "m3"], ["m4", "m5"]], [["m6"]]]
    assert fake.submissions() == 2 and "7 to do: 0 already queued, 7 submitted" in capsys.readouterr().out


def test_work_a_queued_task_holds_is_never_submitted_twice(fake, tmp_path, capsys):
    submit(tmp_path, ["a", "b", "c"])
    [first] = jobs.read_records(tmp_path / "zoo", "train")
    fake.set_queue(f"{first.job_id}|0|PENDING|Resources", f"{first.job_id}|1|RUNNING|None")
    capsys.readouterr()
    submit(tmp_path, ["a", "b", "c", "d"])
    assert "4 to do: 3 already queued, 1 submitted" in capsys.readouterr().out
    assert jobs.read_records(tmp_path / "zoo", "train")[-1].tasks == [["d"]]
    fake.set_queue(f"{first.job_id}|1|RUNNING|None")  # task 0 (a, b) ended without finishing them
    capsys.readouterr()
    submit(tmp_path, ["a", "b", "c"])
    assert "3 to do: 1 already queued, 2 submitted" in capsys.readouterr().out


def test_model_states_read_run_dirs_and_the_queue(fake, tmp_path):
    """pending / running while a task holds a model; failed (naming the task's log) once its task is
    gone and the model never finished; ok from the run dir whatever the queue says."""
    cfgs = [
        OmegaConf.create({"id": f"m{i}", "zoo": {"name": "demo"}, "paths": {"runs": str(tmp_path / "runs")}})
        for i in range(4)
    ]
    zoo_dir = tmp_path / "runs" / "demo"
    jobs.write_record(zoo_dir, jobs.Record("1000", "train", str(tmp_path / "logs"), [["m0"], ["m1"], ["m2", "m3"]]))
    for i in (1, 2):  # started
        (zoo_dir / "models" / f"m{i}").mkdir(parents=True)
        (zoo_dir / "models" / f"m{i}" / "config.yaml").write_text("id: x\n")
    (zoo_dir / "models" / "m3").mkdir(parents=True)
    (zoo_dir / "models" / "m3" / "status").write_text("ok\n")
    (zoo_dir / "models" / "m3" / "DONE").write_text("")
    queue = {("1000", 0): ("PENDING", "Priority"), ("1000", 1): ("RUNNING", "None")}
    states = {s.cfg.id: (s.state, s.reason) for s in model_states(cfgs, queue)}
    assert states["m0"] == ("pending", "task 1000_0 pending (Priority)")
    assert states["m1"] == ("running", "task 1000_1")
    assert states["m2"][0] == "failed" and "task 1000_2 ended before this model finished" in states["m2"][1]
    assert states["m3"] == ("ok", "")
