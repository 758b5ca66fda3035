"""Loaders for packed zoos: streaming shards (`open_zoo`), random access to the HDF5 export
(`ZooH5Dataset`), weight views (flat, state dict, layers, tokens), splits by model, targets,
per-layer normalization, and augmentations (permutation, noise, erasing)."""

from zoo.load.augment import Chain, Erase, Noise
from zoo.load.h5 import ZooH5Dataset
from zoo.load.normalize import Normalizer
from zoo.load.permute import Permute, permute
from zoo.load.safety import ShardError
from zoo.load.splits import split_of
from zoo.load.stream import open_zoo
from zoo.load.targets import Targets
from zoo.load.tokens import Tokens
from zoo.load.views import decode_safetensors, flat, layers, unflatten

__all__ = [
    "open_zoo",
    "ZooH5Dataset",
    "Permute",
    "permute",
    "Noise",
    "Erase",
    "Chain",
    "Normalizer",
    "Targets",
    "Tokens",
    "split_of",
    "ShardError",
    "flat",
    "layers",
    "unflatten",
    "decode_safetensors",
]
