import pytest
import torch
from torch import nn

from zoo.landscape.cka import features, linear_cka, minibatch_cka


def correlated(n: int = 512, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two feature matrices sharing a low-dimensional signal, so CKA is well inside (0, 1)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 4, generator=g)
    X = z @ torch.randn(4, 20, generator=g) + 0.5 * torch.randn(n, 20, generator=g)
    Y = torch.tanh(z @ torch.randn(4, 30, generator=g)) + 0.5 * torch.randn(n, 30, generator=g)
    return X, Y


@pytest.mark.parametrize("unbiased", [False, True])
def test_cka_of_identical_features_is_one(unbiased):
    X, _ = correlated()
    assert linear_cka(X, X, unbiased) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("unbiased", [False, True])
def test_cka_is_invariant_to_orthogonal_maps_and_isotropic_scaling(unbiased):
    X, Y = correlated()
    Q, _ = torch.linalg.qr(torch.randn(20, 20, generator=torch.Generator().manual_seed(1)))
    base = linear_cka(X, Y, unbiased)
    assert 0.2 < base < 0.9
    assert linear_cka(X @ Q, Y, unbiased) == pytest.approx(base, rel=1e-5)
    assert linear_cka(3.7 * X, 0.2 * Y, unbiased) == pytest.approx(base, rel=1e-5)
    # and not to arbitrary linear maps: the check above can fail
    assert linear_cka(X * torch.linspace(0.1, 3, 20), Y, unbiased) != pytest.approx(base, rel=1e-2)


class Columns(nn.Module):
    """Picks input columns: two of these see independent parts of the same input."""

    def __init__(self, cols: slice):
        super().__init__()
        self.cols = cols

    def forward(self, x):
        return x[:, self.cols]


def test_minibatch_cka_matches_full_batch_unbiased_cka():
    torch.manual_seed(0)
    model_a, model_b = nn.Linear(20, 20), nn.Sequential(nn.Linear(20, 30), nn.Tanh())
    X, _ = correlated(n=1024)
    full = linear_cka(model_a(X).detach(), model_b(X).detach(), unbiased=True)
    assert minibatch_cka(model_a, model_b, [(X, None)]) == pytest.approx(full, rel=1e-9)
    batches = [(x, None) for x in X.split(128)]
    assert minibatch_cka(model_a, model_b, batches) == pytest.approx(full, abs=0.01)


def test_minibatch_cka_is_unbiased_for_independent_wide_features():
    """Biased per-batch HSIC would report substantial similarity between pure noise features."""
    x = torch.randn(1024, 1024, generator=torch.Generator().manual_seed(0))
    batches = [(xb, None) for xb in x.split(64)]
    a, b = Columns(slice(0, 512)), Columns(slice(512, None))
    assert linear_cka(x[:64, :512], x[:64, 512:]) > 0.5
    assert abs(minibatch_cka(a, b, batches)) < 0.02


def test_layer_features_come_from_the_named_module_in_eval_mode():
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3)).train()
    x = torch.randn(32, 8)
    model(x)  # moves the running stats away from their init
    hidden = features(model, x, layer="1")
    assert model.training  # mode restored
    model.eval()
    assert torch.allclose(hidden, model[1](model[0](x)))
    assert torch.allclose(features(model, x), model(x))
    assert minibatch_cka(model, model, [(x, None)], lambda m, b: features(m, b[0], "2")) == pytest.approx(1.0)
