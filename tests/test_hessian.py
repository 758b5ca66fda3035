import copy
import weakref

import numpy as np
import pytest
import torch
from mnist1d.data import get_dataset_args, make_dataset
from pyhessian import hessian
from torch import nn
from torch.func import functional_call
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from zoo.data.tokens import TokenData
from zoo.landscape.hessian import hessian_metrics
from zoo.models import build
from zoo.train.tasks import Classify, LanguageModel

criterion = nn.CrossEntropyLoss()


pytestmark = pytest.mark.usefixtures("one_thread")


def dense_hessian(model: nn.Module, batches) -> torch.Tensor:
    """Exact Hessian of the sample-weighted mean loss, in float64, eval mode."""
    model = copy.deepcopy(model).double().eval()
    sizes = [p.numel() for p in model.parameters()]
    n = sum(len(y) for _, y in batches)

    def loss(flat):
        params = {name: c.view_as(p) for (name, p), c in zip(model.named_parameters(), flat.split(sizes))}
        return sum(criterion(functional_call(model, params, (x.double(),)), y) * len(y) / n for x, y in batches)

    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return torch.autograd.functional.hessian(loss, flat)


@pytest.mark.parametrize("probe_batch", [1, 4])  # one probe per HVP, or four through one vmapped HVP
def test_matches_the_exact_hessian_of_a_tiny_model(probe_batch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 12), nn.BatchNorm1d(12), nn.Tanh(), nn.Linear(12, 4))
    x, y = torch.randn(100, 10), torch.randint(0, 4, (100,))
    model(x)  # give BatchNorm running stats, which the Hessian must use (eval mode)
    batches = [(x[:37], y[:37]), (x[37:], y[37:])]  # unequal sizes: weighting matters
    exact = torch.linalg.eigvalsh(dense_hessian(model, batches))
    running_mean = model[1].running_mean.clone()

    out = hessian_metrics(model, Classify(), batches, top_n=3, probe_batch=probe_batch)

    assert model.training and torch.equal(model[1].running_mean, running_mean)
    assert out["top_eigenvalues"] == pytest.approx(exact.flip(0)[:3].tolist(), rel=1e-3)
    assert 0 < out["trace_std"] and abs(out["trace"] - exact.sum().item()) < 3 * out["trace_std"]
    assert sum(out["ritz_weights"]) == pytest.approx(1.0)
    assert out["n_hvp"] < len(exact)  # cheaper than forming the Hessian


def gib(vectors: float, n_params: int) -> float:
    """`max_basis_gb` that holds this many float32 parameter vectors (half a vector more: no rounding down)."""
    return (vectors + 0.5) * n_params * 4 / 2**30


@pytest.mark.parametrize("top_n", [1, 3])
def test_a_basis_bound_restarts_lanczos_and_keeps_eigenvalues_and_trace_right(top_n):
    """max_basis_gb smaller than Lanczos needs: thick restarts, a deflation basis of the bound, the same
    answers (eigenvalues within tol, trace within its standard error) as the exact Hessian's."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 12), nn.BatchNorm1d(12), nn.Tanh(), nn.Linear(12, 4))
    x, y = torch.randn(100, 10), torch.randint(0, 4, (100,))
    model(x)
    batches = [(x[:37], y[:37]), (x[37:], y[37:])]
    exact = torch.linalg.eigvalsh(dense_hessian(model, batches))

    out = hessian_metrics(model, Classify(), batches, top_n=top_n, max_basis_gb=gib(8, len(exact)), max_iter=300)

    assert out["basis_vectors"] == 8 and out["restarts"] >= 1  # the bound binds: Lanczos took more steps
    assert out["top_eigenvalues"] == pytest.approx(exact.flip(0)[:top_n].tolist(), rel=1e-3)
    assert 0 < out["trace_std"] and abs(out["trace"] - exact.sum().item()) < 3 * out["trace_std"]
    assert sum(out["ritz_weights"]) == pytest.approx(1.0)  # the quadrature of the steps before the restart
    with pytest.raises(ValueError, match="max_basis_gb=.* holds 2 vectors of 208 parameters"):
        hessian_metrics(model, Classify(), batches, top_n=top_n, max_basis_gb=gib(2, len(exact)))


class LiveBytes(TorchDispatchMode):
    """Peak bytes of the tensor storages created inside the mode and alive at the same time
    (a storage lives while any view of it does; storages made before the mode are not counted)."""

    def __init__(self):
        super().__init__()
        self.live, self.peak, self.seen = 0, 0, set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for storage in (t.untyped_storage() for t in tree_leaves(out) if isinstance(t, torch.Tensor)):
            if id(storage) not in self.seen:  # not an in-place op's or a view's
                self.seen.add(id(storage))
                self.live += storage.nbytes()
                self.peak = max(self.peak, self.live)
                weakref.finalize(storage, self.free, id(storage), storage.nbytes())
        return out

    def free(self, key: int, nbytes: int) -> None:
        self.seen.discard(key)
        self.live -= nbytes


def test_a_basis_bound_bounds_the_parameter_sized_vectors_held():
    """A model whose parameters dwarf its activations, so that memory is counted in parameter vectors:
    unbounded, the basis buffer takes max_iter = 40 (47 vectors in all); with room for 6, at most 6 + 8."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(200, 500), nn.Tanh(), nn.Linear(500, 3))
    batches = [(torch.randn(8, 200), torch.randint(0, 3, (8,)))]
    n_params = sum(p.numel() for p in model.parameters())
    runs = {}
    for bound in (None, 6):
        with LiveBytes() as memory:
            out = hessian_metrics(model, Classify(), batches, max_iter=40, max_basis_gb=bound and gib(bound, n_params))
        runs[bound] = out, memory.peak / (4 * n_params)
    (full, full_peak), (bounded, bounded_peak) = runs[None], runs[6]
    assert full["basis_vectors"] == 32 and bounded["basis_vectors"] == 6
    assert bounded_peak <= 6 + 8 < full_peak
    assert bounded["top_eigenvalues"][0] == pytest.approx(full["top_eigenvalues"][0], rel=1e-3)


@pytest.fixture(scope="module")
def mlp_and_batches():
    d = make_dataset(get_dataset_args())
    x, y = torch.tensor(d["x"][:512], dtype=torch.float32), torch.tensor(d["y"][:512])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        loss = criterion(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, [(x[:300], y[:300]), (x[300:], y[300:])]


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")  # inside PyHessian
def test_agrees_with_converged_pyhessian(mlp_and_batches):
    model, batches = mlp_and_batches
    ours = hessian_metrics(model, Classify(), batches)  # our defaults

    torch.manual_seed(0)
    reference = hessian(copy.deepcopy(model), criterion, dataloader=batches, cuda=False)
    top, _ = reference.eigenvalues(maxIter=1000, tol=1e-6)
    trace = np.mean(reference.trace(maxIter=600, tol=0.0))  # tol=0: always all 600 probes

    assert ours["top_eigenvalues"][0] == pytest.approx(top[0], rel=0.01)
    assert ours["trace"] == pytest.approx(trace, rel=0.05)
    assert ours["trace_std"] <= 0.01 * abs(ours["trace"])  # the stopping rule held
    assert ours["n_hvp"] < 150


def test_is_deterministic_given_the_seed(mlp_and_batches):
    model, batches = mlp_and_batches
    a, b = (hessian_metrics(model, Classify(), batches, max_iter=20, seed=3) for _ in range(2))
    c = hessian_metrics(model, Classify(), batches, max_iter=20, seed=4)
    assert a == b and a["trace"] != c["trace"]


def test_hvps_summed_one_batch_at_a_time_are_the_hessian_of_the_whole_set():
    """retain_graph=False (language models: one batch's graph at a time) measures the same Hessian as one
    batch holding every window: the batches' HVPs, weighted by their tokens, sum to the whole set's."""
    torch.manual_seed(0)
    gpt = build({"name": "gpt", "vocab_size": 11, "context": 6, "depth": 1, "width": 4, "head_dim": 2, "bias": True})
    text = torch.randint(0, 11, (400,), generator=torch.Generator().manual_seed(0)).numpy()
    data, task = TokenData(text, text, context=6, train_windows=8, eval_windows=6), LanguageModel()
    settings = {"top_n": 2, "max_iter": 30, "deflate": 8, "seed": 1}
    whole = hessian_metrics(gpt, task, task.batches(data, "train", 6, n=6, seed=3), **settings)
    per_batch = hessian_metrics(  # windows of 4 and 2: the weighting matters
        gpt, task, task.batches(data, "train", 4, n=6, seed=3), retain_graph=False, **settings
    )
    assert per_batch["n_hvp"] == whole["n_hvp"]
    for key in ("top_eigenvalues", "ritz_values", "ritz_weights"):
        assert per_batch[key] == pytest.approx(whole[key], rel=1e-4, abs=1e-6)
    assert per_batch["trace"] == pytest.approx(whole["trace"], rel=1e-4)
