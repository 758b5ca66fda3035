"""Loaders for packed zoos: streaming shards (`open_zoo`), random access to the HDF5 export
(`ZooH5Dataset`), weight views and permutation augmentation."""

from zoo.load.h5 import ZooH5Dataset
from zoo.load.permute import Permute, permute
from zoo.load.safety import ShardError
from zoo.load.stream import open_zoo
from zoo.load.views import decode_safetensors, flat, layers, unflatten

__all__ = ["open_zoo", "ZooH5Dataset", "Permute", "permute", "ShardError", "flat", "layers", "unflatten", "decode_safetensors"]
