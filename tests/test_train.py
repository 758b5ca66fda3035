"""Training a zoo through the real `zoo-train` entry point: Hydra multirun, resume, skip, divergence."""

import json
import re
import shutil

import pytest
import torch
from helpers import FAST, TINY, assert_same_run, crash_after_epoch, zoo_train
from safetensors.torch import load_file

from zoo.data import Batches, load
from zoo.models import build
from zoo.pack import pack_zoo
from zoo.sweep import cell_configs, compose_config
from zoo.train.evaluate import evaluate
from zoo.train.run import train_model
from zoo.train.rundir import run_dir

GRID = ["zoo=demo", "model.width=4,8", "data.batch_size=64,256", "seed=0", *FAST]


def data_opts(root, data_root):
    return [f"paths.root={root}", f"paths.data={data_root}"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, data_root):
    """A 2x2 grid trained once by a real Hydra multirun on the parallel local launcher."""
    root = tmp_path_factory.mktemp("sweep")
    overrides = [*GRID, f"paths.data={data_root}"]
    proc = zoo_train(root, "-m", *overrides)
    cfgs = cell_configs([f"paths.root={root}", *overrides])
    return root, overrides, cfgs, proc


def test_multirun_writes_complete_run_dirs(sweep):
    root, _, cfgs, _ = sweep
    assert len(cfgs) == 4
    models = sorted(p.name for p in (root / "runs" / "demo" / "models").iterdir())
    assert models == sorted(cfg.id for cfg in cfgs)
    for cfg in cfgs:
        run = run_dir(cfg)
        assert cfg.id.startswith(f"mlp-w{cfg.model.width}-b{cfg.data.batch_size}-s0-")
        assert run.status() == ("ok", "") and run.is_done()
        assert run.config().grid == {"model.width": cfg.model.width, "data.batch_size": cfg.data.batch_size, "seed": 0}
        rows = run.metrics()
        assert [r["epoch"] for r in rows] == [0, 1, 2]
        assert set(rows[0]) == {"epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds"}
        assert sorted(run.checkpoints()) == [0, 1, 2]
        assert run.last_ckpt.exists()


def test_ids_are_stable_and_distinct(sweep):
    root, overrides, cfgs, _ = sweep
    again = cell_configs([f"paths.root={root}", *overrides])
    assert [c.id for c in again] == [c.id for c in cfgs]
    assert len({c.id for c in cfgs}) == 4
    longer = cell_configs([f"paths.root={root}", *overrides, "trainer.max_epochs=3"])
    assert not {c.id for c in longer} & {c.id for c in cfgs}, "a longer schedule is a different model"


def test_checkpoints_reproduce_logged_accuracy(sweep, data_root):
    _, _, cfgs, _ = sweep
    for cfg in cfgs:
        run = run_dir(cfg)
        data = load(cfg.data, data_root)
        logged = {r["epoch"]: r for r in run.metrics()}
        for epoch, path in run.checkpoints().items():
            model = build(cfg.model)
            model.load_state_dict(load_file(path))
            result = evaluate(model, Batches(data.x_test, data.y_test, 1000))
            assert result["acc"] == logged[epoch]["test_acc"]
            assert result["loss"] == pytest.approx(logged[epoch]["test_loss"], rel=1e-6)


def test_rerun_of_finished_sweep_trains_nothing(sweep):
    root, overrides, cfgs, _ = sweep
    before = {cfg.id: run_dir(cfg).metrics_path.stat().st_mtime_ns for cfg in cfgs}
    proc = zoo_train(root, "-m", *overrides, "hydra/launcher=basic")  # the skip is train_model's, in any launcher
    assert proc.stderr.count("already done (ok), skipped") + proc.stdout.count("already done (ok), skipped") == 4
    assert {cfg.id: run_dir(cfg).metrics_path.stat().st_mtime_ns for cfg in cfgs} == before


def test_same_seed_gives_byte_identical_checkpoints_and_shards(tmp_path, data_root):
    """The same model trained again (here, then in a zoo-train process; same folders: meta.json holds
    the config's paths) gives the same checkpoint files and shards, byte for byte."""
    files, shards = [], []
    overrides = [f"paths.data={data_root}", "model.width=8", "data.batch_size=32", *FAST]
    for train in (
        lambda: train_model(compose_config([f"paths.root={tmp_path}", *overrides])),
        lambda: zoo_train(tmp_path, *overrides),
    ):
        shutil.rmtree(tmp_path / "runs", ignore_errors=True)
        train()
        (model_dir,) = (tmp_path / "runs" / "demo" / "models").iterdir()
        files.append({p.name: p.read_bytes() for p in sorted((model_dir / "ckpt").iterdir())})
        shards.append(pack_zoo(tmp_path / "runs", "demo", tmp_path / "shards", tmp_path / "m.json")["shards"])
    assert list(files[0]) == ["epoch_0000.safetensors", "epoch_0001.safetensors", "epoch_0002.safetensors"]
    assert files[0] == files[1]
    assert shards[0] == shards[1]
    header = json.loads(
        files[0]["epoch_0002.safetensors"][8 : 8 + int.from_bytes(files[0]["epoch_0002.safetensors"][:8], "little")]
    )
    assert list(header["__metadata__"]) == ["epoch", "id"]  # sorted, whatever order safetensors chose


def test_divergence_is_recorded_and_the_sweep_completes(tmp_path, data_root):
    proc = zoo_train(
        tmp_path,
        "-m",
        "hydra/launcher=basic",
        f"paths.data={data_root}",
        "model.width=16",
        "data.batch_size=32",
        "seed=0",
        "optim.lr=0.05,1e3",
        *FAST,
    )
    assert proc.returncode == 0
    cfgs = cell_configs(
        [
            f"paths.root={tmp_path}",
            f"paths.data={data_root}",
            "model.width=16",
            "data.batch_size=32",
            "seed=0",
            "optim.lr=0.05,1e3",
            *FAST,
        ]
    )
    assert len(cfgs) == 2
    states = {cfg.optim.lr: run_dir(cfg).status() for cfg in cfgs}
    assert states[0.05] == ("ok", "")
    assert states[1e3][0] == "diverged" and "epoch 1" in states[1e3][1]
    assert all(run_dir(cfg).is_done() for cfg in cfgs), "a diverged model is finished, not retried"


def test_resume_after_a_crash_equals_uninterrupted_run(tmp_path, data_root):
    """zoo-train dies as if killed right after epoch 3's metrics line, before its resume checkpoint:
    the rerun drops that line, resumes from epoch 2's last.ckpt and ends as an uninterrupted run."""
    args = [
        f"paths.data={data_root}",
        "model.width=32",
        "data.batch_size=64",
        "data.n_train=300",
        "trainer.max_epochs=5",
        "checkpoint.epochs=[0,5]",
    ]
    killed, straight = (cell_configs([f"paths.root={tmp_path / name}", *args])[0] for name in ("killed", "straight"))
    crash_after_epoch(
        3, "from zoo.cli.train import main; main(sys.argv[1:])", f"paths.root={tmp_path / 'killed'}", *args
    )
    run = run_dir(killed)
    assert [r["epoch"] for r in run.metrics()] == [0, 1, 2, 3] and run.last_ckpt.exists() and not run.is_done()

    train_model(killed)
    train_model(straight)
    assert [r["epoch"] for r in run.metrics()] == list(range(6)), "epochs continuous, none lost or duplicated"
    assert_same_run(run, run_dir(straight))
    assert run.is_done()


def test_misspelt_key_gives_hydras_error(tmp_path):
    proc = zoo_train(tmp_path, "model.widht=8", check=False)
    assert proc.returncode != 0
    assert "Could not override 'model.widht'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_value_names_the_key(tmp_path):
    proc = zoo_train(tmp_path, "model.width=abc", check=False)
    assert proc.returncode != 0
    assert "model.width='abc' is not a positive integer" in proc.stderr


@pytest.mark.parametrize("tf32", [False, True])
def test_runtime_tf32_sets_the_cuda_float32_precision_training_runs_with(tmp_path, data_root, tf32):
    """TF32 on tensor-core GPUs is a runtime choice (zoo-plan's peak follows it); CPU kernels keep IEEE fp32."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = not tf32
    (cfg,) = cell_configs(
        [f"paths.root={tmp_path}", f"paths.data={data_root}", "model.width=4", "seed=0", f"runtime.tf32={tf32}", *TINY]
    )
    assert train_model(cfg).state == "ok"
    assert torch.backends.cuda.matmul.allow_tf32 is tf32 and torch.backends.cudnn.allow_tf32 is tf32
    assert torch.backends.mkldnn.matmul.fp32_precision == "none"  # not torch.set_float32_matmul_precision


@pytest.mark.parametrize(
    "override, message",
    [
        ("runtime.tf32=maybe", "runtime.tf32='maybe' is not true or false"),
        ("landscape.hessian.max_basis_gb=-1", "landscape.hessian.max_basis_gb=-1 is not a positive number"),
    ],
)
def test_bad_runtime_and_hessian_values_name_the_key(override, message):
    from zoo.config import ConfigError, validate

    with pytest.raises(ConfigError, match=re.escape(message)):  # cell_configs validates as it composes
        validate(cell_configs(["model.width=4", "data.batch_size=32", "seed=0", override])[0])
