"""Exporting a packed zoo to one HDF5 file, for random access (zoo.load.ZooH5Dataset).

One group per architecture (same tensor names and shapes), named `<arch>-<8 hex of the layout>`:

    weights              (samples, n_params) float32 or float16, chunked ~1 MB
    layout/names         tensor names in module order (floating-point tensors: the flat view)
    layout/shapes        their shapes
    layout/offsets       start of each tensor in a weights row, then n_params
    meta/json            each sample's meta.json, verbatim
    meta/<field>         key, id, epoch, arch, status, phase, n_params, sha256
    meta/grid/<axis>, meta/metrics/<name>, meta/landscape/<name>
                         numbers as float64 (NaN where absent), text as strings

Written while streaming the shards, in buffered blocks: memory is bounded by the buffer,
not by the zoo. The file appears under its name only when complete.
"""

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm import tqdm

from zoo.atomic import atomic_path
from zoo.load.stream import open_zoo
from zoo.load.views import flat
from zoo.shard_format import sample_key

DTYPES = ("float32", "float16")
TEXT_COLUMNS = ("key", "json", "id", "arch", "status", "phase", "sha256")
INT_COLUMNS = ("epoch", "n_params")
TEXT = h5py.string_dtype()
BUFFER_BYTES, BUFFER_ROWS = 64 * 2**20, 1024  # rows held before a flush: bounds memory for big and small models


def group_name(meta: Mapping) -> str:
    spec = json.dumps([[s["name"], s["shape"], s["dtype"]] for s in meta["layout"]])
    return f"{meta['arch']}-{hashlib.sha256(spec.encode()).hexdigest()[:8]}"


def meta_columns(meta: Mapping) -> dict:
    """The metadata table's row of one sample: `{column path: scalar}`."""
    row = {"key": sample_key(meta["id"], meta["epoch"]), "json": json.dumps(meta, sort_keys=True)}
    row |= {k: meta[k] for k in ("id", "epoch", "arch", "status", "phase", "n_params", "sha256")}
    for section in ("grid", "metrics", "landscape"):
        row |= {f"{section}/{k}": v for k, v in (meta[section] or {}).items()}
    return {k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in row.items()}


class GroupWriter:
    """Appends rows (a flat weight vector + its meta) to one architecture group."""

    def __init__(self, group: h5py.Group, meta: Mapping, dtype: str):
        spec = [s for s in meta["layout"] if getattr(torch, s["dtype"]).is_floating_point]
        sizes = [int(np.prod(s["shape"])) for s in spec]
        n = sum(sizes)
        group.attrs["arch"] = meta["arch"]
        group.attrs["model"] = json.dumps(meta["config"].get("model"), sort_keys=True)
        group.create_dataset("layout/names", data=[s["name"] for s in spec], dtype=TEXT)
        shapes = group.create_dataset("layout/shapes", (len(spec),), dtype=h5py.vlen_dtype(np.int64))
        for i, s in enumerate(spec):
            shapes[i] = np.array(s["shape"], dtype=np.int64)
        group["layout/offsets"] = np.cumsum([0, *sizes], dtype=np.int64)
        cols = -(-n // -(-n // 2**16))  # rows split into equal chunks of up to 64k values (256 kB)
        self.weights = group.create_dataset(
            "weights", (0, n), maxshape=(None, n), dtype=dtype, chunks=(max(1, min(64, 2**16 // cols)), cols)
        )
        self.meta = group.require_group("meta")
        self.rows, self.pending = 0, []

    def append(self, vector: torch.Tensor, meta: Mapping) -> None:
        self.pending.append((vector.numpy().astype(self.weights.dtype), meta_columns(meta)))
        rows = len(self.pending)
        if rows >= BUFFER_ROWS or rows * self.weights.shape[1] * self.weights.dtype.itemsize >= BUFFER_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        start, end = self.rows, self.rows + len(self.pending)
        self.weights.resize(end, axis=0)
        self.weights[start:end] = np.stack([v for v, _ in self.pending])
        rows = [r for _, r in self.pending]
        names = dict.fromkeys(k for r in rows for k in r)
        for name in names:
            values = [r.get(name) for r in rows]
            column = self._column(name, next((v for v in values if v is not None), None), start)
            column.resize(end, axis=0)
            column[start:end] = self._cells(name, column, values)
        for name, column in self._columns():
            if name not in names:  # absent in this block: pad with the fill value
                column.resize(end, axis=0)
        self.rows, self.pending = end, []

    def _column(self, name: str, value, rows: int) -> h5py.Dataset:
        if name in self.meta:
            return self.meta[name]
        if name in TEXT_COLUMNS or isinstance(value, str):
            return self.meta.create_dataset(name, (rows,), maxshape=(None,), dtype=TEXT, chunks=(256,))
        dtype, fill = (np.int64, -1) if name in INT_COLUMNS else (np.float64, np.nan)
        return self.meta.create_dataset(name, (rows,), maxshape=(None,), dtype=dtype, fillvalue=fill, chunks=(256,))

    def _cells(self, name: str, column: h5py.Dataset, values: list) -> np.ndarray:
        if column.dtype == TEXT:
            return np.array(["" if v is None else str(v) for v in values], dtype=object)
        if any(isinstance(v, str) for v in values):
            raise ValueError(f"meta column {name!r} mixes numbers and text ({values}); it cannot be tabulated")
        fill = column.fillvalue
        return np.array([fill if v is None else v for v in values], dtype=column.dtype)

    def _columns(self):
        found = []
        self.meta.visititems(lambda name, obj: found.append((name, obj)) if isinstance(obj, h5py.Dataset) else None)
        return found


def export_hdf5(source, out_path: str | Path, *, dtype: str = "float32", shards: str | Path | None = None) -> Path:
    """Write the zoo `source` (manifest, shard dir or URLs; see open_zoo) to `out_path` as HDF5."""
    if dtype not in DTYPES:
        raise ValueError(f"hdf5 dtype={dtype!r}; choose one of {DTYPES}")
    out_path = Path(out_path)
    samples = open_zoo(source, view="state_dict", shards=shards, check_hash=True)
    with atomic_path(out_path) as tmp, open(tmp, "r+b", buffering=0) as f:
        sink = _Sink(f)
        with h5py.File(sink, "w") as h5:
            _write(h5, samples, dtype, sink)
        if sink.error is not None:
            raise OSError(
                f"cannot write {out_path} ({sink.error.strerror or sink.error}); free space or raise "
                "the file size limit, then run it again"
            )
        os.fsync(f.fileno())
    return out_path


class _Sink:
    """The file HDF5 writes through (h5py's file-object driver), whose writes never fail.

    After a failed write (a full disk), HDF5 1.14 crashes (segfault) in its next flush or close;
    so the first OSError is kept, later writes are dropped, and export_hdf5 raises the error once
    HDF5 has let go of the file."""

    def __init__(self, f):
        self.f, self.error = f, None

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.f.seek(offset, whence)

    def tell(self) -> int:
        return self.f.tell()

    def read(self, size: int = -1) -> bytes:
        return self.f.read(size)

    def readinto(self, buffer) -> int:
        return self.f.readinto(buffer)

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        done = 0
        try:
            while self.error is None and done < len(view):
                done += self.f.write(view[done:])
        except OSError as err:
            self.error = err
        return len(view)

    def truncate(self, size: int | None = None) -> int:
        return self._guard(self.f.truncate, size)

    def flush(self) -> None:
        self._guard(self.f.flush)

    def _guard(self, call, *args):
        try:
            return call(*args)
        except OSError as err:
            self.error = self.error or err


def _write(h5: h5py.File, samples, dtype: str, sink: _Sink) -> None:
    writers: dict[str, GroupWriter] = {}
    for weights, meta in tqdm(samples, desc="hdf5", unit="sample"):
        if sink.error is not None:
            return
        name = group_name(meta)
        if name not in writers:
            h5.attrs["zoo"] = meta["zoo"]
            writers[name] = GroupWriter(h5.create_group(name), meta, dtype)
        writers[name].append(flat(weights), meta)
    for writer in writers.values():
        writer.flush()
