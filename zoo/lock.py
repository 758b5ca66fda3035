"""Advisory locks: one process at a time works in a model's run dir or writes a pack.

An exclusive `fcntl.flock` on a lock file; the kernel releases it when its holder exits, however
it dies (kill -9 included), so a stale lock never blocks a rerun. The holder writes its pid into
the file, for the message of whoever finds it taken.
"""

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)


class Locked(RuntimeError):
    """The lock is held by another process."""


@contextlib.contextmanager
def hold(path: str | Path, *, wait: bool, what: str) -> Iterator[None]:
    """Hold the lock `path` for the block. Taken: raise Locked (`wait=False`) or wait for it,
    saying so. `what` names the locked thing in messages."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            if not wait:
                raise Locked(f"{what} is locked by process {holder} ({path})") from None
            log.warning("%s is locked by process %s (%s); waiting for it", what, holder, path)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
