"""Where a zoo's shards are: a manifest, a directory of shards, or webdataset URLs.

A manifest names its shards and where they were written (`location`, relative to the
manifest); `shards=` overrides that with a directory or a URL pattern, e.g. after a download.
"""

import json
import os
from pathlib import Path

from webdataset.shardlists import expand_urls

SCHEMA_VERSION = 1


def read_manifest(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} not found; write it with `zoo-pack zoo=<name>`")
    manifest = json.loads(path.read_text())
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{path}: manifest schema_version {manifest.get('schema_version')!r}, this zoo "
                         f"package reads {SCHEMA_VERSION}; upgrade the package or re-run zoo-pack")
    return manifest


def is_manifest(source) -> bool:
    return isinstance(source, (str, Path)) and str(source).endswith(".json")


CARD = "README.md"  # the dataset card zoo-pack writes next to the shards (zoo.pack.card)


def locate(manifest_path: str | Path, manifest: dict,
           shards: str | Path | None = None) -> tuple[dict[str, str], list[str]]:
    """`({shard name: url}, extra)`: the manifest's shards that exist under `shards` (default: the
    manifest's `location`), and the files or URLs there that the manifest does not list."""
    names = [s["name"] for s in manifest["shards"]]
    where = Path(manifest_path).parent / manifest["location"] if shards is None else shards
    if Path(where).is_dir():
        files = {p.name: str(p) for p in sorted(Path(where).iterdir()) if p.is_file() and p.name != CARD}
    elif shards is None:
        files = {}  # the manifest's own location is gone: every shard is missing
    else:  # a URL pattern: match by the name after the last slash
        files = {url.rsplit("/", 1)[-1]: url for url in expand_urls(str(shards))}
    found = {name: files[name] for name in names if name in files}
    extra = [url for name, url in files.items() if name not in found]
    return found, extra


def shard_urls(source: str | Path | list[str], shards: str | Path | None = None) -> list[str]:
    """The shard URLs of `source`: a manifest path, a directory (its `*.tar`), a URL pattern or a list."""
    if is_manifest(source):
        manifest = read_manifest(source)
        found, _ = locate(source, manifest, shards)
        missing = [s["name"] for s in manifest["shards"] if s["name"] not in found]
        if missing:
            where = shards or Path(source).parent / manifest["location"]
            raise FileNotFoundError(f"{len(missing)} shard(s) of {source} not found in {where}, e.g. {missing[0]}; "
                                    "pass shards=<dir or URL pattern> where they are")
        return [found[s["name"]] for s in manifest["shards"]]
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        urls = [str(p) for p in sorted(Path(source).glob("*.tar"))]
        if not urls:
            raise FileNotFoundError(f"no *.tar shards in {source}")
        return urls
    return list(source) if isinstance(source, (list, tuple)) else expand_urls(str(source))
