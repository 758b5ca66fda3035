"""Tokenize text documents into the token files `zoo.data.tokens` reads (the format of nanoGPT's
data/openwebtext/prepare.py): `train.bin` and `val.bin`, GPT-2 BPE ids as uint16, each document
followed by the end-of-text token 50256. Every 2000th document goes to `val.bin` (nanoGPT holds out
0.05% too, `test_size=0.0005`, though by a random split).

    pip install tiktoken
    python -m zoo.data.prepare_openwebtext --out data/openwebtext openwebtext/   # .txt files, recursively

OpenWebText ships as `openwebtext.tar.xz` of `urlsf_subset*.xz` archives of `.txt` documents: unpack
both levels first. Users of the HuggingFace `datasets` copy can run nanoGPT's script instead.
"""

import argparse
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from zoo.atomic import atomic_write

EOT = 50256     # GPT-2's <|endoftext|>
VAL_EVERY = 2000


def write_token_files(docs: Iterable[str], out: Path, encode: Callable[[str], list[int]]) -> dict[str, int]:
    """Encode `docs` into `out/train.bin` and `out/val.bin`; returns the token count of each."""
    counts = {"train": 0, "val": 0}
    with atomic_write(out / "train.bin") as train, atomic_write(out / "val.bin") as val:
        for i, doc in enumerate(docs):
            ids = np.array([*encode(doc), EOT], dtype=np.uint16)
            split, f = ("val", val) if i % VAL_EVERY == 0 else ("train", train)
            f.write(ids.tobytes())
            counts[split] += len(ids)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for train.bin and val.bin")
    parser.add_argument("sources", type=Path, nargs="+", help=".txt files or folders of them")
    args = parser.parse_args()
    import tiktoken

    encoding = tiktoken.get_encoding("gpt2")
    files = sorted(p for src in args.sources for p in ([src] if src.is_file() else src.rglob("*.txt")))
    docs = (p.read_text(encoding="utf-8", errors="replace") for p in files)
    counts = write_token_files(docs, args.out, encoding.encode_ordinary)
    print(f"{len(files)} documents -> {args.out}: {counts['train']:,} train / {counts['val']:,} val tokens")


if __name__ == "__main__":
    main()
