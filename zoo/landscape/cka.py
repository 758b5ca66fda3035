"""Linear centered kernel alignment (CKA, Kornblith et al. 2019) between two models.

`minibatch_cka` follows Nguyen et al. 2021 ("Do wide and deep networks learn the same
things?"): unbiased HSIC (Song et al. 2012) per batch, summed over batches, so no Gram
matrix larger than a batch is ever formed.
"""

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from zoo.models.outputs import features


def gram(X: Tensor) -> Tensor:
    """Linear kernel matrix in float64."""
    X = X.flatten(1).double()
    return X @ X.T


def hsic(K: Tensor, L: Tensor, unbiased: bool = True) -> Tensor:
    """HSIC of two Gram matrices: unbiased (needs n > 3), or biased tr(KHLH) / (n-1)^2."""
    n = len(K)
    if not unbiased:
        centered = K - K.mean(0) - K.mean(1, keepdim=True) + K.mean()
        return (centered * L).sum() / (n - 1) ** 2
    K, L = K.clone().fill_diagonal_(0), L.clone().fill_diagonal_(0)
    KL = K @ L
    return (KL.trace() + K.sum() * L.sum() / ((n - 1) * (n - 2)) - 2 * KL.sum() / (n - 2)) / (n * (n - 3))


def linear_cka(X: Tensor, Y: Tensor, unbiased: bool = False) -> float:
    """Full-batch linear CKA of feature matrices X (n, d1) and Y (n, d2) on the same n inputs."""
    K, L = gram(X), gram(Y)
    return (hsic(K, L, unbiased) / (hsic(K, K, unbiased) * hsic(L, L, unbiased)).sqrt()).item()


Featurize = Callable[[nn.Module, Sequence[Tensor]], Tensor]


def outputs(model: nn.Module, batch: Sequence[Tensor]) -> Tensor:
    """(n, d): the model's flattened output on the batch's inputs (its first tensor)."""
    return features(model, batch[0]).flatten(1)


def minibatch_cka(
    model_a: nn.Module, model_b: nn.Module, batches: Iterable[Sequence[Tensor]], featurize: Featurize = outputs
) -> float:
    """Linear CKA between the two models' features (`featurize(model, batch)`: (n, d), by default the
    outputs), accumulated over batches. Every batch needs more than 3 samples (rows)."""
    return cka_estimates(model_a, model_b, batches, featurize)["cka_unbiased"]


def cka_estimates(
    model_a: nn.Module, model_b: nn.Module, batches: Iterable[Sequence[Tensor]], featurize: Featurize = outputs
) -> dict[str, float]:
    """Both estimates from one pass over the batches:

    `cka_unbiased`: unbiased HSIC summed over batches (`minibatch_cka`, ours);
    `cka_biased`: the mean over batches of each batch's biased CKA — the reference study's
    (ptmz/loss_landscape/CKA.py), which is inflated for few samples per batch relative to the
    feature dimension (e.g. 100-class logits in batches of 128).
    """
    ab = aa = bb = 0.0
    per_batch = []
    for batch in batches:
        K, L = gram(featurize(model_a, batch)), gram(featurize(model_b, batch))
        ab, aa, bb = ab + hsic(K, L), aa + hsic(K, K), bb + hsic(L, L)
        per_batch.append(hsic(K, L, False) / (hsic(K, K, False) * hsic(L, L, False)).sqrt())
    return {"cka_unbiased": (ab / (aa * bb).sqrt()).item(), "cka_biased": torch.stack(per_batch).mean().item()}
