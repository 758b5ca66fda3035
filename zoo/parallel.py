"""Independent work items in parallel processes, with a progress bar; failures are reported, not raised.

Workers end with their launcher: a launcher killed with kill -9 (no chance to stop its pool) would
otherwise leave them running with PPID 1, finishing the sweep and then sitting idle.
"""

import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context

from tqdm import tqdm

_watching = None  # the pid whose watcher runs (a forked child inherits the variable, not the thread)


def exit_with_parent(poll_s: float = 0.5) -> None:
    """End this process (exit code 1) once the process that started it is gone. Polls the parent pid
    from a daemon thread; Linux's PR_SET_PDEATHSIG would fire when the parent's *thread* that forked
    this process exits, which for a pool's workers is not the launcher's end. Idempotent."""
    global _watching
    if _watching == os.getpid():
        return
    _watching = os.getpid()
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)  # no cleanup to run: every write is atomic and locks are released by the kernel

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def process_pool(workers: int) -> ProcessPoolExecutor:
    """The one kind of worker pool: spawned processes (safe whatever torch threads or kernels this
    process has run; a worker imports torch once, ~4 s, then takes many items) that end with their
    launcher."""
    return ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=exit_with_parent)


def run_parallel(fn: Callable, items: Sequence, workers: int | None, desc: str, name: Callable = str) -> list:
    """`fn(item)` for every item in `workers` spawned processes (-1 or None: one per core);
    returns the items that raised, each named on the console with its error."""
    workers = min(os.cpu_count() if workers in (-1, None) else workers, max(len(items), 1))
    failed = []
    with process_pool(workers) as pool:
        futures = {pool.submit(fn, item): item for item in items}
        for future in tqdm(as_completed(futures), total=len(items), desc=desc, unit="item"):
            if future.exception() is not None:
                failed.append(futures[future])
                tqdm.write(f"{desc}: {name(futures[future])} failed: {future.exception()!r}")
    return failed
