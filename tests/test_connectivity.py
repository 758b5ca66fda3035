import copy

import pytest
import torch
from mnist1d.data import get_dataset_args, make_dataset
from torch import nn

from zoo.landscape.connectivity import (
    BezierCurve,
    bezier_curve,
    connectivity_metrics,
    evaluate_curve,
    linear_path,
    mode_connectivity,
)
from zoo.models.resnet import ResNet
from zoo.train.tasks import Classify

criterion = nn.CrossEntropyLoss()


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    d = make_dataset(get_dataset_args())
    x, y = torch.tensor(d["x"], dtype=torch.float32), torch.tensor(d["y"])
    xt, yt = torch.tensor(d["x_test"], dtype=torch.float32), torch.tensor(d["y_test"])
    return list(zip(x[:1000].split(250), y[:1000].split(250))), [(xt[:500], yt[:500])]


def trained_mlp(train, seed: int, steps: int = 400, width: int = 128) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(40, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(steps):
        x, y = train[step % len(train)]
        loss = criterion(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def test_mode_connectivity_picks_the_largest_deviation_from_the_endpoint_mean():
    assert mode_connectivity([1.0, 3.0, 2.0, 1.0]) == -2.0  # barrier
    assert mode_connectivity([1.0, 0.5, 0.8, 3.0]) == 1.5  # dip below the endpoint mean
    assert mode_connectivity([2.0, 2.0, 2.0]) == 0.0


def test_bezier_curve_removes_the_barrier_of_the_linear_path(data):
    train, test = data
    model_a, model_b = trained_mlp(train, seed=0), trained_mlp(train, seed=1)
    state = copy.deepcopy(model_a.state_dict())
    m = connectivity_metrics(model_a, model_b, train, test, Classify(), steps=300, n_points=11)
    assert m["linear_mc_loss_train"] < -1.0  # differently seeded minima: a clear barrier
    assert m["linear_mc_err_train"] < -0.3
    assert m["mc_loss_train"] > m["linear_mc_loss_train"] / 4  # the curve lowers it 4x or more
    assert m["mc_err_train"] > m["linear_mc_err_train"] / 4
    curve, linear = m["curve"], m["linear"]
    assert len(curve["t"]) == len(curve["loss_test"]) == 11
    # the endpoints are the models themselves on both paths
    assert curve["loss_train"][0] == pytest.approx(linear["loss_train"][0], rel=1e-5)
    assert curve["loss_train"][-1] == pytest.approx(linear["loss_train"][-1], rel=1e-5)
    x, y = map(torch.cat, zip(*train))
    assert linear["loss_train"][0] == pytest.approx(criterion(model_a(x), y).item(), rel=1e-5)
    assert all(torch.equal(v, state[k]) for k, v in model_a.state_dict().items())  # untouched


def test_linear_path_from_a_model_to_itself_has_no_barrier():
    torch.manual_seed(0)
    model = ResNet(18, width=2)
    batches = [(torch.randn(32, 3, 8, 8), torch.randint(0, 10, (32,))) for _ in range(2)]
    values = linear_path(model, model, batches, Classify(), n_points=5)
    assert max(values["loss_train"]) - min(values["loss_train"]) < 1e-5
    assert mode_connectivity(values["loss_train"]) == pytest.approx(0.0, abs=1e-5)


def test_batchnorm_statistics_are_recomputed_at_each_point():
    torch.manual_seed(0)
    model_a, model_b = ResNet(18, width=2), ResNet(18, width=2)
    batches = [(torch.randn(32, 3, 8, 8) + 1, torch.randint(0, 10, (32,))) for _ in range(2)]
    curve = BezierCurve(model_a, model_b, n_bends=3)
    values = evaluate_curve(curve, Classify(), batches, n_points=3)
    # reference: the endpoint model itself, with running stats averaged over the batches
    reference = copy.deepcopy(model_b)
    for bn in reference.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.reset_running_stats()
            bn.momentum = None
    with torch.no_grad():
        for x, _ in batches:
            reference(x)
        reference.eval()
        x, y = map(torch.cat, zip(*batches))
        expected = criterion(reference(x), y).item()
        stale = criterion(model_b.eval()(x), y).item()
    assert values["loss_train"][-1] == pytest.approx(expected, rel=1e-4)
    assert abs(stale - expected) > 1e-3  # the test can tell recomputed from stale statistics


def test_only_the_bends_are_trained():
    torch.manual_seed(0)
    model_a, model_b = nn.Linear(4, 3), nn.Linear(4, 3)
    batches = [(torch.randn(16, 4), torch.randint(0, 3, (16,)))]
    curve = bezier_curve(model_a, model_b, batches, Classify(), n_bends=4, steps=20, optimizer="sgd", lr=0.1)
    assert [tuple(p.shape) for p in curve.parameters() if p.requires_grad] == [(2, 3, 4), (2, 3)]
    for t, model in ((0.0, model_a), (1.0, model_b)):
        assert all(torch.equal(curve.params(t)[k], v) for k, v in model.state_dict().items())
    initial = BezierCurve(model_a, model_b, n_bends=4).params(0.5)
    assert not torch.allclose(curve.params(0.5)["weight"], initial["weight"])
