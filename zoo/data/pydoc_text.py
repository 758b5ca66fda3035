"""The Python documentation that ships with Python (`pydoc_data.topics`, ~0.46 MB of English) as a
byte-level token stream (vocabulary 256): an offline language-modelling corpus for the demo LM zoo.

Topics are joined in sorted order; the last `test_fraction` of the bytes is the held-out split.
"""

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from zoo.data.tokens import SMOKE_WINDOWS, TokenData


def pydoc_bytes() -> np.ndarray:
    from pydoc_data.topics import topics

    return np.frombuffer("\n".join(topics[k] for k in sorted(topics)).encode(), dtype=np.uint8)


def load_pydoc(cfg: Mapping, root: Path) -> TokenData:
    tokens = pydoc_bytes()
    cut = int(len(tokens) * (1 - cfg["test_fraction"]))
    windows = max(1, cfg["tokens_per_epoch"] // cfg["context"])
    evals = max(1, cfg["eval_tokens"] // cfg["context"])
    if cfg.get("smoke"):
        windows, evals = SMOKE_WINDOWS, SMOKE_WINDOWS
    return TokenData(tokens[:cut], tokens[cut:], cfg["context"], windows, evals)
