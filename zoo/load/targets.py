"""Property targets beside the weights: `targets=["metrics.test_acc", "phase", "model.width"]`.

A target key is anything a where-clause can name (zoo.load.select.lookup: meta fields, grid axes,
dotted paths such as `landscape.hessian_trace`). Numbers come back as float32 tensors (NaN where
the value is missing, e.g. an unmeasured landscape); text values are categorical and come back
as int64 class indices (-1 where missing, which `cross_entropy(ignore_index=-1)` skips).

The class list of a categorical key is fixed before any sample is read, so that every worker,
split and rerun maps a value to the same index: phases in the order of Yang et al.
(I, II, III, IV-A, IV-B), statuses as the trainer writes them, a grid axis's values as the
manifest records them, or an explicit `classes={key: [...]}`.
"""

import math
from collections.abc import Mapping, Sequence

import torch

from zoo.load.select import lookup
from zoo.load.sources import is_manifest, read_manifest
from zoo.phases.rules import PHASES
from zoo.train.rundir import STATES

KNOWN = {"phase": list(PHASES), "status": list(STATES)}


def manifest_classes(manifest: Mapping) -> dict[str, list]:
    """Class lists for the categorical keys of a zoo: phase, status and the grid axes with text values."""
    classes = dict(KNOWN)
    for axis, values in manifest["grid"]["values"].items():
        if any(isinstance(v, str) for v in values):
            classes[axis] = list(values)
    return classes


class Targets:
    """Picklable map `meta → {key: 0-d tensor}`; `classes[key]` lists a categorical key's values by index."""

    def __init__(self, keys: Sequence[str], classes: Mapping[str, Sequence] | None = None):
        if isinstance(keys, str):
            raise TypeError(f"targets={keys!r}: give a list of keys, e.g. [{keys!r}]")
        self.keys = list(keys)
        self.classes = {k: list(v) for k, v in {**KNOWN, **(classes or {})}.items() if k in self.keys}

    @classmethod
    def for_source(cls, source, keys: Sequence[str], classes: Mapping[str, Sequence] | None = None) -> "Targets":
        """Targets whose class lists come from `source`'s manifest (where it has one), then from `classes`."""
        found = manifest_classes(read_manifest(source)) if is_manifest(source) else {}
        return cls(keys, {**found, **(classes or {})})

    def __call__(self, meta: Mapping) -> dict[str, torch.Tensor]:
        return {key: self.value(meta, key) for key in self.keys}

    def value(self, meta: Mapping, key: str) -> torch.Tensor:
        value = lookup(meta, key)
        if key in self.classes:
            if value is None:
                return torch.tensor(-1)
            if value not in self.classes[key]:
                raise ValueError(
                    f"target {key!r} of sample {meta['id']} epoch {meta['epoch']} is {value!r}, not one "
                    f"of its classes {self.classes[key]}; pass classes={{{key!r}: [...]}}"
                )
            return torch.tensor(self.classes[key].index(value))
        if isinstance(value, str):
            raise ValueError(
                f"target {key!r} is text ({value!r}) and has no class list; "
                f"pass classes={{{key!r}: [...]}} to use it as a categorical target"
            )
        if isinstance(value, Mapping | list):
            raise ValueError(f"target {key!r} is not a scalar ({type(value).__name__}); name one of its fields")
        return torch.tensor(math.nan if value is None else float(value), dtype=torch.float32)
