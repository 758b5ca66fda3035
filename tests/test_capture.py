"""runtime.compile (zoo.train.capture): a captured training step trains as the eager one, to float
tolerance, for one model and for a population. The tests capture with the aot_eager backend (forward
and backward graphs through AOTAutograd, eager kernels), or inductor (C++ kernels built with the
machine's g++). Compiling is slow here whatever the model (measured on 2 cores under load from other
agents: 13 s for torch.compile's first call in a process, 30-55 s for a tiny ResNet's training and
evaluation shapes), so these are slow tests."""

import pytest
from helpers import assert_same_training, net_configs
from omegaconf import OmegaConf

from zoo.config import ConfigError
from zoo.train.capture import compile_options
from zoo.train.population import train_population
from zoo.train.run import train_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow
def test_one_model_captured_trains_as_eager(net_data_root, tmp_path):
    (eager,) = net_configs(tmp_path / "eager", net_data_root, "resnet18", "seed=0")
    (compiled,) = net_configs(tmp_path / "compiled", net_data_root, "resnet18", "seed=0", "runtime.compile=aot_eager")
    assert eager.id == compiled.id, "runtime.compile is never part of a model id"
    assert train_model(eager).state == train_model(compiled).state == "ok"
    assert_same_training([eager], [compiled])


@pytest.mark.slow
def test_population_captured_trains_as_eager(net_data_root, tmp_path):
    eager = net_configs(tmp_path / "eager", net_data_root, "resnet18")
    compiled = net_configs(tmp_path / "compiled", net_data_root, "resnet18", "runtime.compile=aot_eager")
    assert [r.state for r in train_population(eager) + train_population(compiled)] == ["ok"] * 4
    assert_same_training(eager, compiled)


@pytest.mark.slow
def test_inductor_trains_as_eager(net_data_root, tmp_path):
    (eager,) = net_configs(tmp_path / "eager", net_data_root, "resnet18", "seed=0", "trainer.max_epochs=1")
    (compiled,) = net_configs(
        tmp_path / "compiled", net_data_root, "resnet18", "seed=0", "trainer.max_epochs=1", "runtime.compile=true"
    )
    assert train_model(eager).state == train_model(compiled).state == "ok"
    assert_same_training([eager], [compiled])


def test_compile_setting():
    cfg = OmegaConf.create({"runtime": {"compile": False, "accelerator": "cpu"}, "data": {"task": "classify"}})
    assert compile_options(cfg) is None
    cfg.runtime.compile = True
    assert compile_options(cfg) == {"backend": "inductor", "mode": None}, "CUDA graphs only on a GPU"
    cfg.runtime.compile = "no_such_backend"
    with pytest.raises(ConfigError, match="runtime.compile='no_such_backend'"):
        compile_options(cfg)
    cfg.runtime.compile, cfg.data.task = True, "pinn"
    with pytest.raises(ConfigError, match="PINNs train eagerly"):
        compile_options(cfg)
