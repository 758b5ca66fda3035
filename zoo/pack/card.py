"""The dataset card of a packed zoo: `README.md` next to its shards, with the Hugging Face YAML
header (features, split, license, citation) so that the shard folder loads and reads as a Hugging
Face dataset: `datasets.load_dataset("webdataset", data_files=...)` or the folder itself.
"""

import json
from collections.abc import Mapping
from pathlib import Path

from zoo.atomic import write_text
from zoo.load.sources import CARD
from zoo.pack.manifest import PHASES, UNLABELED

LICENSE = "cc-by-4.0"
CITATION = """@inproceedings{yang2021taxonomizing,
  title     = {Taxonomizing local versus global structure in neural network loss landscapes},
  author    = {Yang, Yaoqing and Hodgkinson, Liam and Theisen, Ryan and Zou, Joe and Gonzalez, Joseph E. and
               Ramchandran, Kannan and Mahoney, Michael W.},
  booktitle = {Advances in Neural Information Processing Systems},
  year      = {2021}
}"""


def feature(value) -> dict:
    """The Hugging Face feature (YAML form) of a JSON value, as `datasets` infers it from the samples."""
    if isinstance(value, Mapping):
        return {"struct": [{"name": k, **feature(v)} for k, v in sorted(value.items())]}
    if isinstance(value, list):
        return {"list": feature(value[0]) if value else {"dtype": "null"}}
    dtype = (
        "null"
        if value is None
        else "bool"
        if isinstance(value, bool)
        else "int64"
        if isinstance(value, int)
        else "float64"
        if isinstance(value, float)
        else "string"
    )
    return {"dtype": dtype}


def _yaml(value, indent: int = 0) -> str:
    """YAML of plain dicts, lists and scalars (JSON scalars are YAML), without a YAML dependency."""
    pad = " " * indent
    if isinstance(value, dict):
        return "".join(
            f"{pad}{k}:" + (f"\n{_yaml(v, indent + 2)}" if isinstance(v, (dict, list)) and v else f" {json.dumps(v)}\n")
            for k, v in value.items()
        )
    lines = []
    for item in value:
        body = _yaml(item, indent + 2) if isinstance(item, (dict, list)) else f"{pad}  {json.dumps(item)}\n"
        lines.append(f"{pad}- {body.lstrip()}")
    return "".join(lines)


def dataset_card(manifest: Mapping, meta: Mapping) -> str:
    """The card's text: YAML header from the manifest and one sample's meta, then a short description."""
    zoo, counts = manifest["zoo"], manifest["counts"]
    features = [
        {"name": "meta.json", **feature(dict(meta))},
        {"name": "weights.safetensors", "dtype": "binary"},
        {"name": "__key__", "dtype": "string"},
        {"name": "__url__", "dtype": "string"},
    ]  # webdataset's
    header = {
        "license": LICENSE,
        "pretty_name": f"zoo {zoo}",
        "tags": ["model-zoo", "weight-space-learning", "loss-landscape", "webdataset"],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": f"{zoo}-*.tar"}]}],
        "dataset_info": {
            "features": features,
            "splits": [
                {
                    "name": "train",
                    "num_examples": counts["samples"],
                    "num_bytes": sum(s["bytes"] for s in manifest["shards"]),
                }
            ],
        },
    }
    phases = counts.get("phase", {})
    rows = "\n".join(f"| {p} | {phases[p]} |" for p in (*PHASES, UNLABELED) if phases.get(p))
    grid = "\n".join(
        f"- `{axis}`: {', '.join(map(str, values))}" for axis, values in manifest["grid"]["values"].items()
    )
    return f"""---
{_yaml(header)}---

# Model zoo `{zoo}`

{counts["samples"]} samples (one per model and checkpoint epoch) of {counts["packed_models"]} trained models
({counts["models"]} in the zoo), written by `zoo-pack`. Each sample is `meta.json` (the model's id, grid values,
full config, metrics at that epoch, loss-landscape metrics, phase) and `weights.safetensors` (the checkpoint).
`meta.json`'s `landscape` has the same fields in every sample: `measured` says whether that checkpoint was
measured, the other fields are NaN where it was not.

Grid (phase-diagram axes: {", ".join(f"`{a}`" for a in manifest["grid"]["axes"])}):

{grid}

Models per loss-landscape phase (Yang et al. 2021):

| phase | models |
|---|---|
{rows}

## Loading

```python
import datasets, safetensors.torch
zoo = datasets.load_dataset("webdataset", data_files={{"train": "{zoo}-*.tar"}}, split="train")
weights = safetensors.torch.load(zoo[0]["weights.safetensors"])   # {{name: tensor}}
```

With `webdataset`: `wds.WebDataset(urls).decode(zoo.load.decode_safetensors)`; with `zoo`:
`zoo.load.open_zoo("manifests/{zoo}.json")` (verified hashes, views, selection by metadata).

## Citation

```bibtex
{CITATION}
```
"""


def write_card(out_dir: str | Path, manifest: Mapping, meta: Mapping) -> Path:
    path = Path(out_dir) / CARD
    write_text(path, dataset_card(manifest, meta))
    return path
