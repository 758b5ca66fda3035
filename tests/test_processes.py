"""Concurrent launches and killed launchers, with real processes: one process at a time per run dir
and per pack (the other skips or waits, and says so), and workers that end with their launcher."""

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import TINY, configs, train_tiny_zoo, wait_for

from zoo.lock import hold
from zoo.sweep import compose_config
from zoo.train.ids import with_identity
from zoo.train.population import train_population
from zoo.train.run import train_model
from zoo.train.rundir import run_dir

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}


def test_a_model_another_process_trains_is_skipped_and_reported(tmp_path, data_root, caplog):
    cfg = compose_config([f"paths.root={tmp_path}", f"paths.data={data_root}", *TINY])
    run = run_dir(with_identity(cfg))
    with hold(run.lock_path, wait=True, what="test"):  # as a concurrent zoo-train would
        result = train_model(cfg)
        assert (result.state, result.reason) == (
            "running",
            f"model {run.id} is locked by process {os.getpid()} ({run.lock_path})",
        )
        assert f"{run.id}: skipped: model {run.id} is locked" in caplog.text
        assert not run.metrics_path.exists() and not run.is_done()
    assert train_model(cfg).state == "ok" and run.is_done()


def test_population_members_another_process_trains_are_left_to_it(tmp_path, data_root):
    cfgs = configs(tmp_path, data_root, "model.width=4,8", "seed=0")
    taken = run_dir(cfgs[0])
    with hold(taken.lock_path, wait=True, what="test"):
        results = train_population(cfgs)
    assert [r.state for r in results] == ["missing", "ok"]
    assert not taken.metrics_path.exists() and run_dir(cfgs[1]).is_done()


def stderr_until(proc: subprocess.Popen, text: str, timeout: float) -> str:
    """The process's stderr up to the first line holding `text` (AssertionError after `timeout` s)."""
    seen, deadline = "", time.monotonic() + timeout
    while text not in seen:
        assert time.monotonic() < deadline and proc.poll() is None, f"no {text!r} in:\n{seen}"
        if select.select([proc.stderr], [], [], 0.2)[0]:
            seen += os.read(proc.stderr.fileno(), 65536).decode()
    return seen


def test_a_second_pack_waits_for_the_first(tmp_path, data_root):
    train_tiny_zoo(tmp_path, data_root, cells=[["model.width=4"]])
    with hold(tmp_path / "shards" / ".demo.lock", wait=True, what="test"):  # a pack in progress
        script = (
            "import sys; from zoo.pack import pack_zoo; r = sys.argv[1]; "
            "pack_zoo(r + '/runs', 'demo', r + '/shards', r + '/m.json')"
        )
        proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stderr=subprocess.PIPE, env=ENV)
        stderr_until(proc, f"the pack of demo in {tmp_path}/shards is locked by process {os.getpid()}", 60)
        assert not (tmp_path / "m.json").exists() and proc.poll() is None
    assert proc.wait(60) == 0 and (tmp_path / "m.json").exists()


def children(pid: int) -> dict[int, str]:
    """`{pid: command line}` of the live (not zombie) children of `pid`."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            if entry.name.isdigit() and int(fields[1]) == pid and fields[0] != "Z":
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_launcher_then_workers_end(cmd: list[str], is_worker, started, n: int, env=ENV) -> None:
    """Start `cmd`, wait for `n` children matching `is_worker(cmdline)` and for `started()`, kill -9
    the launcher: its workers must end (they polled the parent pid) instead of working on."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        wait_for(
            lambda: len([p for p, c in children(proc.pid).items() if is_worker(c)]) >= n and started(),
            120,
            f"{n} workers at work",
        )
        workers = [p for p, c in children(proc.pid).items() if is_worker(c)]
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    try:
        wait_for(lambda: not any(alive(p) for p in workers), 20, "the workers to end with their launcher")
    finally:
        for p in workers:
            if alive(p):
                os.kill(p, signal.SIGKILL)


def test_killing_a_run_parallel_launcher_ends_its_workers(tmp_path):
    (tmp_path / "work.py").write_text(
        "import pathlib, time\n\n\ndef work(path):\n    pathlib.Path(path).touch()\n    time.sleep(300)\n"
    )
    script = (
        "import sys, work; from zoo.parallel import run_parallel; "
        "run_parallel(work.work, [sys.argv[1] + '/a', sys.argv[1] + '/b'], 2, 'work')"
    )
    env = {**ENV, "PYTHONPATH": ENV["PYTHONPATH"] + os.pathsep + str(tmp_path)}
    started = lambda: (tmp_path / "a").exists() and (tmp_path / "b").exists()  # noqa: E731
    kill_launcher_then_workers_end(
        [sys.executable, "-c", script, str(tmp_path)], lambda c: "spawn_main" in c, started, 2, env
    )


def _training(root: Path, n: int):
    return lambda: len(list((root / "runs" / "demo" / "models").glob("*/metrics.jsonl"))) >= n


@pytest.mark.slow  # ~1 min on 2 busy cores: Hydra, loky workers, torch and Lightning start up
def test_killing_a_joblib_sweep_ends_its_workers(tmp_path, data_root):
    cmd = [
        sys.executable,
        "-m",
        "zoo.cli.train",
        "-m",
        f"paths.root={tmp_path}",
        f"paths.data={data_root}",
        "model.width=4,8",
        "trainer.max_epochs=10000",
        "hydra.launcher.n_jobs=2",
        "data.n_train=300",
    ]
    kill_launcher_then_workers_end(cmd, lambda c: "loky" in c or "joblib" in c, _training(tmp_path, 2), 2)


@pytest.mark.slow  # ~40 s on 2 busy cores
def test_killing_a_population_launcher_ends_its_workers(tmp_path, data_root):
    cmd = [
        sys.executable,
        "-m",
        "zoo.cli.train",
        "-m",
        f"paths.root={tmp_path}",
        f"paths.data={data_root}",
        "hydra/launcher=population",
        "hydra.launcher.n_jobs=2",
        "runtime.population=1",
        "model.width=4,8",
        "trainer.max_epochs=10000",
        "data.n_train=300",
    ]
    kill_launcher_then_workers_end(cmd, lambda c: "spawn_main" in c, _training(tmp_path, 2), 2)  # zoo.parallel's pool
