"""Optimizer + per-step LR schedule from the `optim` config section."""

from collections.abc import Callable, Iterable, Mapping

import torch


def build_optimizer(
    params: Iterable[torch.nn.Parameter],
    cfg: Mapping,
    total_steps: int,
    ndim: Callable[[torch.Tensor], int] = torch.Tensor.dim,
    foreach: bool | None = None,
):
    """Returns `(optimizer, scheduler)`; the scheduler is stepped once per batch. `ndim`: a
    parameter's dims as `no_decay_1d` counts them (a population passes its members'). `foreach`:
    torch's multi-tensor update (one op per kind over all tensors; torch's default on a CPU is a
    Python loop over them), which populations take."""
    name = cfg["name"]
    if cfg.get("no_decay_1d"):  # nanoGPT: decay matrices and embeddings, not gains and biases
        params = list(params)
        params = [
            {"params": [p for p in params if ndim(p) >= 2]},
            {"params": [p for p in params if ndim(p) < 2], "weight_decay": 0.0},
        ]
    if name == "sgd":
        opt = torch.optim.SGD(
            params,
            lr=cfg["lr"],
            momentum=cfg["momentum"],
            weight_decay=cfg["weight_decay"],
            nesterov=cfg.get("nesterov", False),
            foreach=foreach,
        )
    elif name in ("adam", "adamw"):  # adam: L2 penalty in the gradient; adamw: decoupled decay
        adam = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        opt = adam(
            params,
            lr=cfg["lr"],
            weight_decay=cfg["weight_decay"],
            betas=tuple(cfg.get("betas", (0.9, 0.999))),
            foreach=foreach,
        )
    else:
        raise ValueError(f"unknown optim.name={name!r}; choose 'sgd', 'adam' or 'adamw'")
    sched = cfg["scheduler"]
    if sched["name"] == "onecycle":
        # PyTorch's defaults, as the reference used them: with cycle_momentum=True the
        # momentum cycles 0.95 -> 0.85 -> 0.95 and the optimizer's own momentum is ignored.
        # `stretch` > 1 sizes the cycle for that many times the steps taken: the reference's bug under
        # gradient accumulation (conf/optim/sgd_reference_onecycle.yaml); the lr never anneals fully.
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            opt,
            max_lr=cfg["lr"],
            total_steps=total_steps * sched.get("stretch", 1),
            pct_start=sched["pct_start"],
            anneal_strategy=sched["anneal_strategy"],
            cycle_momentum=sched["cycle_momentum"],
            base_momentum=sched["base_momentum"],
            max_momentum=sched["max_momentum"],
            div_factor=sched["div_factor"],
            final_div_factor=sched["final_div_factor"],
        )
    elif sched["name"] == "constant":
        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    else:
        raise ValueError(f"unknown optim.scheduler.name={sched['name']!r}; choose 'onecycle' or 'constant'")
    return opt, scheduler
