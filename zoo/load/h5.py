"""Random access to a zoo's HDF5 export (zoo.pack.hdf5): a map-style Dataset of `(weights, meta)`."""

import json
import os
from collections.abc import Mapping
from pathlib import Path

import h5py
import torch
from torch.utils.data import Dataset

from zoo.load import views
from zoo.load.safety import ShardError
from zoo.load.select import matches
from zoo.load.stream import Transform


class ZooH5Dataset(Dataset):
    """Samples of all architecture groups, group by group in name order, rows in pack order.

    Same `view`, `epochs`, `where` and `transform` as `open_zoo`; the state dict holds the
    floating-point tensors (the HDF5 rows), weights come back as float32, `meta` is the
    sample's meta.json. The file is opened lazily in each process, so DataLoader workers work.
    """

    def __init__(self, path: str | Path, *, view: str = "flat", epochs=None, where: Mapping | None = None,
                 transform: Transform | None = None):
        if view not in views.VIEWS:
            raise ValueError(f"unknown view={view!r}; choose one of {views.VIEWS}")
        self.path, self.view, self.transform = Path(path), view, transform
        where = {**(where or {}), **({"epoch": epochs} if epochs is not None else {})}
        self._h5, self._pid = None, None
        with h5py.File(self.path, "r") as h5:
            refuse_outside_data(h5, self.path)
            self.index = [(name, row) for name in sorted(h5) for row in _rows(h5[name], where)]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        group, row = self.index[i]
        h5 = self._file()[group]
        meta = json.loads(h5["meta/json"][row])
        vector = torch.from_numpy(h5["weights"][row]).float()
        weights = views.unflatten(vector, meta["layout"])
        if self.transform is not None:
            weights = self.transform(weights, meta)
        return views.view(weights, self.view), meta

    def _file(self) -> h5py.File:
        if self._h5 is None or self._pid != os.getpid():  # h5py handles do not survive a fork
            self._h5, self._pid = h5py.File(self.path, "r"), os.getpid()
        return self._h5


def refuse_outside_data(h5: h5py.File, path: Path) -> None:
    """ShardError if the file would read data from elsewhere: external links, external or virtual datasets."""
    link = h5.visititems_links(lambda name, target: name if isinstance(target, h5py.ExternalLink) else None)
    if link is not None:
        raise ShardError(f"{path}: {link!r} is an external link to {h5.get(link, getlink=True).filename!r}; "
                         "refused: an export holds its own data. Re-export it with `zoo-pack hdf5`")
    outside = h5.visititems(lambda name, obj: name if isinstance(obj, h5py.Dataset)
                            and (obj.external or obj.is_virtual) else None)
    if outside is not None:
        raise ShardError(f"{path}: dataset {outside!r} stores its data in other files; refused: "
                         "an export holds its own data. Re-export it with `zoo-pack hdf5`")


def _rows(group: h5py.Group, where: Mapping) -> list[int] | range:
    if not where:
        return range(group["weights"].shape[0])
    return [row for row, text in enumerate(group["meta/json"][:]) if matches(json.loads(text), where)]
