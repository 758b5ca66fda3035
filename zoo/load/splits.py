"""Train/val/test splits by model: every checkpoint of a model lands in the same split.

Two kinds of `splits`:

- ratios, e.g. `(0.7, 0.15, 0.15)` (or two ratios: train/test): a model's split follows from
  sha256(`split_seed`, model id) read as a number in [0, 1). A model keeps its split when models
  are added to or removed from the zoo, which a permutation of the model list would not give;
  the price is that the split sizes match the ratios only up to sampling noise
  (with 80 models, 0.7 gives 56 ± 4 train models).
- held-out grid values, e.g. `{"test": {"seed": 1}}` or `{"val": {"model.width": 64}, "test": {"seed": 2}}`:
  a model whose meta matches a split's where-clause (zoo.load.select) goes to that split (the first
  that matches, in the mapping's order), every other model to "train". For generalization studies:
  hold out a seed, a width, a batch size.
"""

import hashlib
from collections.abc import Mapping, Sequence

from zoo.load.select import matches

NAMES = {2: ("train", "test"), 3: ("train", "val", "test")}


def check_ratios(splits: Sequence[float]) -> None:
    if len(splits) not in NAMES or any(r < 0 for r in splits) or abs(sum(splits) - 1) > 1e-6:
        raise ValueError(
            f"splits={tuple(splits)}: give 2 (train, test) or 3 (train, val, test) non-negative "
            "ratios that sum to 1, or a mapping {split name: where-clause}"
        )


def unit_hash(model_id: str, seed: int) -> float:
    """A number in [0, 1) fixed by the model id and the seed."""
    digest = hashlib.sha256(f"{seed}:{model_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(meta: Mapping, splits: Sequence[float] | Mapping[str, Mapping], seed: int = 0) -> str:
    """The name of the split the model of `meta` belongs to."""
    if isinstance(splits, Mapping):
        return next((name for name, where in splits.items() if matches(meta, where)), "train")
    check_ratios(splits)
    u, edge = unit_hash(meta["id"], seed), 0.0
    for name, ratio in zip(NAMES[len(splits)], splits):
        edge += ratio
        if u < edge:
            return name
    return NAMES[len(splits)][-1]  # u within rounding of 1


class InSplit:
    """Picklable predicate on a sample's meta: is its model in split `name`?"""

    def __init__(self, name: str, splits: Sequence[float] | Mapping[str, Mapping] = (0.7, 0.15, 0.15), seed: int = 0):
        names = ("train", *splits) if isinstance(splits, Mapping) else NAMES.get(len(splits), ())
        if not isinstance(splits, Mapping):
            check_ratios(splits)
        if name not in names:
            raise ValueError(f"split={name!r} is not one of {tuple(names)} (splits={splits!r})")
        self.name, self.splits, self.seed = name, splits, seed

    def __call__(self, meta: Mapping) -> bool:
        return split_of(meta, self.splits, self.seed) == self.name
