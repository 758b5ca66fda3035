"""The error for a dataset that is not on disk: nothing is ever downloaded, so it says what to put where."""

from pathlib import Path


class DatasetNotFound(FileNotFoundError):
    """A dataset file is missing; the message names the expected path, its format and where to get it."""


def require(path: Path, root: Path, dataset: str, expected: str, source: str) -> Path:
    """`path` if it exists, else `DatasetNotFound` naming the path, `expected` format and `source`."""
    if not path.exists():
        raise DatasetNotFound(
            f"{dataset} not found: expected {expected} at {path}. Get it from {source} and unpack it "
            f"into paths.data={root} (or point paths.data / ZOO_ROOT at your copy). Nothing is downloaded.")
    return path
