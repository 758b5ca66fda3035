"""Fully connected network, scalable in width and depth."""

from torch import nn


class MLP(nn.Module):
    """`in_dim → width → … → width → out_dim` with `depth` hidden layers.

    Layer names (`layers.0`, `layers.2`, …) are stable: they are the tensor names in
    every checkpoint and shard, and permutation augmentation relies on the order.
    """

    def __init__(
        self, in_dim: int, out_dim: int, width: int = 16, depth: int = 2, bias: bool = False, activation: str = "relu"
    ):
        super().__init__()
        act = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "leakyrelu": nn.LeakyReLU}[activation]
        dims = [in_dim] + [width] * depth
        layers: list[nn.Module] = []
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(d_in, d_out, bias=bias), act()]
        layers.append(nn.Linear(dims[-1], out_dim, bias=bias))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x.flatten(1))
