"""Independent work items in parallel processes, with a progress bar; failures are reported, not raised."""

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context

from tqdm import tqdm


def run_parallel(fn: Callable, items: Sequence, workers: int | None, desc: str,
                 name: Callable = str) -> list:
    """`fn(item)` for every item in `workers` spawned processes (-1 or None: one per core);
    returns the items that raised, each named on the console with its error."""
    workers = min(os.cpu_count() if workers in (-1, None) else workers, max(len(items), 1))
    failed = []
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(fn, item): item for item in items}
        for future in tqdm(as_completed(futures), total=len(items), desc=desc, unit="item"):
            if future.exception() is not None:
                failed.append(futures[future])
                tqdm.write(f"{desc}: {name(futures[future])} failed: {future.exception()!r}")
    return failed
