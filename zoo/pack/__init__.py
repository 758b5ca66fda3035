"""Packing zoos into webdataset shards with a manifest, verifying them, exporting HDF5,
and importing zoos of the reference study's layout."""

from zoo.pack.hdf5 import export_hdf5
from zoo.pack.importer import import_reference
from zoo.pack.packing import pack_zoo
from zoo.pack.verify import verify

__all__ = ["pack_zoo", "verify", "export_hdf5", "import_reference"]
