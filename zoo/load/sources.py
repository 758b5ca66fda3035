"""Where a zoo's shards are: a manifest, a directory of shards, or webdataset URLs.

A manifest names its shards and where they were written (`location`, relative to the
manifest); `shards=` overrides that with a directory or a URL pattern, e.g. after a download.
A manifest is data from anywhere, so it is checked before it is followed: its `location` is an
http(s) URL or a relative path that stays inside the folder holding the manifest's folder (the
project root of `manifests/` and `shards/`), and its shard names are flat `*.tar` file names.
Anywhere else is read only when the caller says so with `shards=`.
"""

import json
import os
from pathlib import Path, PurePosixPath

from webdataset.shardlists import expand_urls

from zoo.shard_format import SCHEMA_VERSION, SHARD_NAME

URL_SCHEMES = ("http://", "https://")


def read_manifest(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} not found; write it with `zoo-pack zoo=<name>`")
    try:
        manifest = json.loads(path.read_bytes())
    except (ValueError, RecursionError):
        raise ValueError(f"{path}: not a JSON manifest; re-download it or re-run zoo-pack") from None
    if not isinstance(manifest, dict) or manifest.get("schema_version") != SCHEMA_VERSION:
        found = manifest.get("schema_version") if isinstance(manifest, dict) else None
        raise ValueError(
            f"{path}: manifest schema_version {found!r}, this zoo "
            f"package reads {SCHEMA_VERSION}; upgrade the package or re-run zoo-pack"
        )
    problem = _manifest_problem(manifest)
    if problem:
        raise ValueError(f"{path}: {problem}; re-download the manifest or re-run zoo-pack")
    return manifest


def _manifest_problem(manifest: dict) -> str | None:
    if not isinstance(manifest.get("location"), str) or not isinstance(manifest.get("zoo"), str):
        return "`location` and `zoo` must be strings"
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not all(isinstance(s, dict) for s in shards):
        return "`shards` must be a list of objects"
    for s in shards:
        if not isinstance(s.get("name"), str) or not SHARD_NAME.fullmatch(s["name"]):
            return "a shard name is not a flat `<zoo>-<generation>-NNNNNN.tar` file name"
        if not all(isinstance(s.get(k), int) and s[k] >= 0 for k in ("bytes", "samples")) or not isinstance(
            s.get("sha256"), str
        ):
            return f"shard {s['name']}: `bytes` and `samples` must be counts, `sha256` a string"
    if len({s["name"] for s in shards}) != len(shards):
        return "a shard is listed twice"
    return None


def is_manifest(source) -> bool:
    return isinstance(source, (str, Path)) and str(source).endswith(".json")


CARD = "README.md"  # the dataset card zoo-pack writes next to the shards (zoo.pack.card)


def manifest_location(manifest_path: str | Path, manifest: dict) -> str | Path:
    """Where the manifest says its shards are: an http(s) URL prefix or a directory (see the module doc)."""
    location = manifest["location"]
    if location.startswith(URL_SCHEMES):
        return location.rstrip("/")
    root = Path(manifest_path).resolve().parent.parent
    where = (Path(manifest_path).resolve().parent / location).resolve()
    if (
        "://" in location
        or ":" in location.split("/")[0]
        or PurePosixPath(location).is_absolute()
        or not where.is_relative_to(root)
    ):
        raise ValueError(
            f"{manifest_path}: its shard location leaves the folder {root} (absolute, `..` or a "
            "non-http scheme); refused. Pass shards=<dir or URL pattern> where the shards are"
        )
    return where


def locate(
    manifest_path: str | Path, manifest: dict, shards: str | Path | None = None
) -> tuple[dict[str, str], list[str]]:
    """`({shard name: url}, extra)`: the manifest's shards that exist under `shards` (default: the
    manifest's `location`), and the files or URLs there that the manifest does not list."""
    names = [s["name"] for s in manifest["shards"]]
    where = manifest_location(manifest_path, manifest) if shards is None else shards
    if isinstance(where, str) and where.startswith(URL_SCHEMES) and shards is None:
        files = {name: f"{where}/{name}" for name in names}
    elif Path(where).is_dir():
        files = {
            p.name: str(p)
            for p in sorted(Path(where).iterdir())
            if not p.is_dir() and not p.name.startswith(".") and p.name != CARD
        }  # not a pack's lock, temp files, card
    elif shards is None:
        files = {}  # the manifest's own location is gone: every shard is missing
    else:  # a URL pattern: match by the name after the last slash
        files = {url.rsplit("/", 1)[-1]: url for url in expand_urls(str(shards))}
    found = {name: files[name] for name in names if name in files}
    extra = [url for name, url in files.items() if name not in found]
    return found, extra


def shard_urls(source: str | Path | list[str], shards: str | Path | None = None) -> tuple[list[str], dict[str, dict]]:
    """`(urls, entries)`: the shard URLs of `source` (a manifest path, a directory, a URL pattern
    or a list) and, for a manifest, its entry (bytes, samples, sha256) of each URL."""
    if is_manifest(source):
        manifest = read_manifest(source)
        found, _ = locate(source, manifest, shards)
        missing = [s["name"] for s in manifest["shards"] if s["name"] not in found]
        if missing:
            where = shards or manifest_location(source, manifest)
            raise FileNotFoundError(
                f"{len(missing)} shard(s) of {source} not found in {where}, e.g. {missing[0]}; "
                "pass shards=<dir or URL pattern> where they are"
            )
        return [found[s["name"]] for s in manifest["shards"]], {found[s["name"]]: s for s in manifest["shards"]}
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        return directory_shards(Path(source)), {}
    return (list(source) if isinstance(source, (list, tuple)) else expand_urls(str(source))), {}


def directory_shards(folder: Path) -> list[str]:
    """The `*.tar` shards of one pack in `folder`; shards of several packs (a repack that was
    interrupted before it committed) cannot be told apart without their manifest."""
    urls = [str(p) for p in sorted(folder.glob("*.tar"))]
    if not urls:
        raise FileNotFoundError(f"no *.tar shards in {folder}")
    packs = sorted({m.group("pack") if (m := SHARD_NAME.fullmatch(Path(u).name)) else Path(u).name for u in urls})
    if len(packs) > 1:
        raise ValueError(
            f"{folder} holds the shards of {len(packs)} packs ({', '.join(packs[:3])}); "
            "read it through its manifest (open_zoo('manifests/<zoo>.json')) or re-run zoo-pack"
        )
    return urls
