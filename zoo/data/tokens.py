"""Token streams as nanoGPT prepares them (OpenWebText): `train.bin` / `val.bin`, GPT-2 BPE ids as
uint16, read through a memmap, so a 17 GB file costs no memory. `prepare_openwebtext` writes them.

An epoch is `tokens_per_epoch` tokens of random context windows (nanoGPT's `get_batch`), drawn from a
generator seeded by (seed, epoch): a resumed run sees the same windows. Evaluation uses a fixed set
of `eval_tokens` tokens of windows per split, the same for every model.
"""

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from zoo.data.missing import require
from zoo.sizes import SMOKE_WINDOWS

SOURCE = ("python -m zoo.data.prepare_openwebtext (or nanoGPT's data/openwebtext/prepare.py, "
          "which writes the same format)")


class Windows:
    """`n` random windows of `context + 1` tokens, as `(x, y)` batches with `y` = `x` shifted by one;
    with `offset`, the windows after the first `offset` of the seeded draw (disjoint seeded sets)."""

    def __init__(self, tokens: np.ndarray, context: int, n: int, batch_size: int, seed: Callable[[], int],
                 offset: int = 0):
        self.tokens, self.context, self.n, self.batch_size, self.seed = tokens, context, n, batch_size, seed
        self.offset = offset

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(self.seed())
        starts = torch.randint(len(self.tokens) - self.context, (self.offset + self.n,), generator=gen)
        starts = starts[self.offset:].tolist()
        for i in range(0, self.n, self.batch_size):
            block = np.stack([self.tokens[s:s + self.context + 1] for s in starts[i:i + self.batch_size]])
            block = torch.from_numpy(block.astype(np.int64))
            yield block[:, :-1], block[:, 1:]


@dataclass
class TokenData:
    train: np.ndarray
    test: np.ndarray
    context: int
    train_windows: int  # per epoch
    eval_windows: int   # per evaluation of a split

    def batches(self, split: str, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                epoch: Callable[[], int] = lambda: 0) -> Windows:
        """Training windows (fresh per epoch) when `shuffle`, else the fixed evaluation windows of `split`."""
        from zoo.data import epoch_seed  # the package imports this module

        tokens = {"train": self.train, "test": self.test}[split]
        if shuffle:
            return Windows(tokens, self.context, self.train_windows, batch_size, lambda: epoch_seed(seed, epoch()))
        return Windows(tokens, self.context, self.eval_windows, batch_size, lambda: 0)


def load_tokens(cfg: Mapping, root: Path) -> TokenData:
    """`root/<cfg.name>/{train,val}.bin`; `val.bin` is the test split."""
    files = {}
    for split, name in (("train", "train.bin"), ("test", "val.bin")):
        path = require(root / cfg["name"] / name, root, cfg["name"],
                       f"{cfg['name']}/{name}, uint16 GPT-2 token ids", SOURCE)
        files[split] = np.memmap(path, dtype=np.uint16, mode="r")
        if len(files[split]) <= cfg["context"]:
            raise ValueError(f"{path} holds {len(files[split])} tokens, fewer than one window of "
                             f"data.context={cfg['context']} + 1")
    windows = max(1, cfg["tokens_per_epoch"] // cfg["context"])
    evals = max(1, cfg["eval_tokens"] // cfg["context"])
    if cfg.get("smoke"):
        windows, evals = SMOKE_WINDOWS, SMOKE_WINDOWS
    return TokenData(files["train"], files["test"], cfg["context"], windows, evals)
