"""`runtime.compile`: a training step's forward and backward captured by `torch.compile` (opt-in).

    runtime.compile: false      eager (default)
    runtime.compile: true       inductor; on a GPU with CUDA graphs (mode "reduce-overhead"), which
                                replay the step's kernels in one launch: the lever for small models,
                                whose eager steps are bound by kernel launches, not FLOPs
    runtime.compile: <backend>  any torch.compile backend by name, e.g. aot_eager (captures the
                                forward and backward graphs, runs them with eager kernels: no C++
                                compiler needed, compiles in seconds)

Captured: the model's forward with its loss (populations) or the model's forward (single models,
through `nn.Module.compile`, which keeps the state-dict names), and with them the backward graph
(AOTAutograd). Not captured: the optimizer step (eager, one foreach op per kind over all tensors:
zoo.train.optim) and the lr schedule. A compiled optimizer step would recompile at every step of a
OneCycle schedule, which sets lr and momentum as Python floats.

Compiling costs time once per input shape and mode (measured here, 2 loaded CPU cores: 6-70 s for a
small network with inductor), so it pays on long runs, not on a test's few steps. Results match eager
training to float tolerance (tests/test_capture.py); never part of a model id.
"""

from collections.abc import Callable

import torch
from omegaconf import DictConfig

from zoo.config import ConfigError


def compile_options(cfg: DictConfig) -> dict | None:
    """torch.compile's keyword arguments for `runtime.compile`, or None when it is off."""
    setting = cfg.runtime.get("compile", False)
    if setting is False or setting in ("off", None):
        return None
    if cfg.data.get("task") == "pinn":  # its loss differentiates the network twice: AOTAutograd cannot
        raise ConfigError("runtime.compile: PINNs train eagerly (double backward); set runtime.compile=false")
    backend = "inductor" if setting is True or setting == "on" else str(setting)
    if backend not in torch._dynamo.list_backends(exclude_tags=()):
        raise ConfigError(
            f"runtime.compile={setting!r} is not true, false or a torch.compile backend "
            f"({', '.join(torch._dynamo.list_backends(exclude_tags=()))}): fix the override or its conf/ file"
        )
    gpu = cfg.runtime.accelerator in ("gpu", "cuda") and torch.cuda.is_available()
    mode = "reduce-overhead" if gpu and backend == "inductor" else None  # CUDA graphs
    return {"backend": backend, "mode": mode}


def captured(fn: Callable, cfg: DictConfig) -> Callable:
    """`fn` compiled as `runtime.compile` says (itself when off)."""
    options = compile_options(cfg)
    if not options:
        return fn
    _fresh()
    return torch.compile(fn, **options)


def capture_module(module: torch.nn.Module, cfg: DictConfig) -> None:
    """Compile `module`'s forward in place as `runtime.compile` says (state-dict names unchanged)."""
    options = compile_options(cfg)
    if options:
        _fresh()
        module.compile(**options)


def _fresh() -> None:
    """Forget earlier models' compiled code: torch keeps 8 per function and then runs eagerly without
    saying so, and one worker process trains many models (or populations) in a row."""
    torch._dynamo.reset()
