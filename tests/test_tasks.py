"""The tasks' landscape metrics against exact values on tiny models: the dense Hessian of the LM and
PINN losses, CKA by the U-statistic formula of unbiased HSIC, mode connectivity on a path whose loss
is known in closed form."""

import copy
import itertools
import math

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from torch.func import functional_call

from zoo.data.convection import load_convection
from zoo.data.tokens import TokenData
from zoo.landscape.cka import minibatch_cka
from zoo.landscape.connectivity import connectivity_metrics, linear_path, mode_connectivity
from zoo.landscape.hessian import hessian_metrics
from zoo.landscape.stage import _model
from zoo.models import build
from zoo.train.rundir import RunDir
from zoo.train.tasks import PDE, Classify, LanguageModel, task_of

pytestmark = pytest.mark.usefixtures("one_thread")

GPT = {"name": "gpt", "vocab_size": 11, "context": 6, "depth": 1, "width": 4, "head_dim": 2, "bias": True}
PINN = {"name": "mlp", "in_dim": 2, "out_dim": 1, "width": 6, "depth": 2, "bias": True, "activation": "tanh"}
CONVECTION = {"beta": 5.0, "n_collocation": 24, "grid_x": 8, "grid_t": 5}


def tokens(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 11, (n,), generator=torch.Generator().manual_seed(seed))


def token_data() -> TokenData:
    return TokenData(tokens(400, 0).numpy(), tokens(200, 1).numpy(), context=6, train_windows=8, eval_windows=6)


def dense_hessian(model: nn.Module, task, batches) -> torch.Tensor:
    """The exact Hessian of the task's size-weighted mean loss, in float64, by autograd."""
    model = copy.deepcopy(model).double().eval()
    sizes = [p.numel() for p in model.parameters()]
    n = sum(task.size(b) for b in batches)

    def loss(flat):
        params = {name: c.view_as(p) for (name, p), c in zip(model.named_parameters(), flat.split(sizes))}
        net = lambda x: functional_call(model, params, (x.double() if x.is_floating_point() else x,))
        return sum(task.loss(net, b) * task.size(b) / n for b in batches)

    return torch.autograd.functional.hessian(loss, torch.cat([p.detach().reshape(-1) for p in model.parameters()]))


@pytest.mark.parametrize("name", ["lm", "pinn"])
def test_hessian_of_the_task_loss_matches_the_dense_hessian(name):
    torch.manual_seed(0)
    if name == "lm":
        model, task = build(GPT), LanguageModel()
        batches = task.batches(token_data(), "train", 4, n=6, seed=3)  # windows of 4 and 2: weighting matters
    else:
        model, task = build(PINN), PDE(CONVECTION["beta"], PINN["depth"])
        batches = task.batches(load_convection(CONVECTION), "train", 0)
    exact = torch.linalg.eigvalsh(dense_hessian(model, task, batches))
    out = hessian_metrics(model, task, batches, top_n=2, tol=1e-6, trace_tol=1e-3)
    assert out["top_eigenvalues"] == pytest.approx(exact.flip(0)[:2].tolist(), rel=1e-3)
    assert abs(out["trace"] - exact.sum().item()) <= 4 * out["trace_std"]  # Hutchinson: within its error


def hsic_u(K: torch.Tensor, L: torch.Tensor) -> float:
    """Unbiased HSIC as the U-statistic of Song et al. (2012), by explicit sums over distinct indices:
    E[k_ij l_ij] + E[k_ij] E[l_qr] - 2 E[k_ij l_iq]."""
    n = len(K)
    pairs = list(itertools.permutations(range(n), 2))
    triples = list(itertools.permutations(range(n), 3))
    quads = list(itertools.permutations(range(n), 4))
    a = sum(K[i, j] * L[i, j] for i, j in pairs) / len(pairs)
    b = sum(K[i, j] * L[q, r] for i, j, q, r in quads) / len(quads)
    c = sum(K[i, j] * L[i, q] for i, j, q in triples) / len(triples)
    return float(a + b - 2 * c)


def cka_by_formula(X: torch.Tensor, Y: torch.Tensor) -> float:
    K, L = X.double() @ X.double().T, Y.double() @ Y.double().T
    return hsic_u(K, L) / math.sqrt(hsic_u(K, K) * hsic_u(L, L))


def test_cka_of_the_final_hidden_states_per_token_and_of_the_pinn_hidden_layer():
    torch.manual_seed(0)
    a, b = build(GPT).eval(), build(GPT).eval()
    task = LanguageModel()
    (batch,) = task.batches(token_data(), "test", 2, n=2)  # 2 windows of 6 tokens: 12 rows

    def hidden(m, x):  # ln_f(blocks(embeddings)), written out
        return m.ln_f(m.blocks(m.wte(x) + m.wpe(torch.arange(x.shape[1])))).flatten(0, 1).detach()

    expected = cka_by_formula(hidden(a, batch[0]), hidden(b, batch[0]))
    assert minibatch_cka(a, b, [batch], lambda m, bt: task.features(m, bt)) == pytest.approx(expected, rel=1e-6)
    logits = cka_by_formula(a(batch[0]).flatten(0, 1).detach(), b(batch[0]).flatten(0, 1).detach())
    assert minibatch_cka(a, b, [batch], lambda m, bt: task.features(m, bt, "output")) == pytest.approx(logits, rel=1e-6)

    p, q = build(PINN).eval(), build(PINN).eval()
    pde = PDE(CONVECTION["beta"], PINN["depth"])
    (grid,) = pde.batches(load_convection(CONVECTION), "test", 10, n=10, seed=1)  # 10 grid points
    expected = cka_by_formula(p.layers[:4](grid[0]).detach(), q.layers[:4](grid[0]).detach())  # last tanh
    assert minibatch_cka(p, q, [grid], lambda m, bt: pde.features(m, bt)) == pytest.approx(expected, rel=1e-6)


def affine_pinn(w_x: float, w_t: float, c: float) -> nn.Module:
    """u = w_x x + w_t t + c: its PINN loss is known in closed form."""
    model = build({**PINN, "depth": 0})
    with torch.no_grad():
        model.layers[0].weight.copy_(torch.tensor([[w_x, w_t]]))
        model.layers[0].bias.fill_(c)
    return model


def test_mode_connectivity_of_the_pinn_loss_on_a_path_known_in_closed_form():
    data, beta = load_convection(CONVECTION), CONVECTION["beta"]
    task = PDE(beta, 0)
    train, test = task.batches(data, "train", 0), task.batches(data, "test", 16)
    ends = (0.1, -0.5, 0.2), (-0.1, 0.5, -0.3)
    path = linear_path(affine_pinn(*ends[0]), affine_pinn(*ends[1]), train, task, test, n_points=5)
    x0 = data.initial[:, 0].double()
    expected = []
    for t in path["t"]:
        w_x, w_t, c = ((1 - t) * e0 + t * e1 for e0, e1 in zip(*ends))
        residual = (w_t + beta * w_x) ** 2  # u_t + beta u_x is constant
        initial = ((w_x * x0 + c - torch.sin(x0)) ** 2).mean().item()
        boundary = (2 * math.pi * w_x) ** 2  # u(0, t) - u(2 pi, t) = -2 pi w_x
        expected.append(residual + initial + boundary)
    assert path["loss_train"] == pytest.approx(expected, rel=1e-5)
    m = connectivity_metrics(affine_pinn(*ends[0]), affine_pinn(*ends[1]), train, test, task, steps=5, n_points=5)
    assert m["linear_mc_loss_train"] == pytest.approx(mode_connectivity(expected), rel=1e-5)
    # the headline error: relative L2 against sin(x - beta t) on the grid
    u = path["err_test"][0]
    grid = torch.cat([b[0] for b in test])
    exact = torch.sin(grid[:, :1] - beta * grid[:, 1:])
    pred = 0.1 * grid[:, :1] - 0.5 * grid[:, 1:] + 0.2
    assert u == pytest.approx(((pred - exact).norm() / exact.norm()).item(), rel=1e-5)


def test_task_is_read_from_the_config_once():
    from omegaconf import OmegaConf

    cfg = lambda data: OmegaConf.create({"data": data, "model": {"depth": 4}})
    assert isinstance(task_of(cfg({})), Classify) and task_of(cfg({})).batchnorm
    lm = task_of(cfg({"task": "lm"}))
    assert lm.headline == "test_acc" and not lm.batchnorm and lm.cka_layer == "ln_f"
    pinn = task_of(cfg({"task": "pinn", "beta": 30}))
    assert (pinn.headline, pinn.beta, pinn.cka_layer) == ("test_rel_l2", 30.0, "layers.7")
    with pytest.raises(ValueError, match="data.task='rl'"):
        task_of(cfg({"task": "rl"}))


def test_landscape_measures_in_float32_what_trained_in_bf16(tmp_path):
    torch.manual_seed(0)
    model = build(GPT)
    (tmp_path / "ckpt").mkdir()
    save_file({k: v.bfloat16() for k, v in model.state_dict().items()}, tmp_path / "ckpt" / "epoch_0001.safetensors")
    from omegaconf import OmegaConf

    loaded = _model(RunDir(tmp_path), OmegaConf.create({"model": GPT}), 1)
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
