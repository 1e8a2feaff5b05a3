"""Keeping measurements alone under pytest-xdist (no pytest import).

Workers share one lock file. A perf test holds it exclusively while it is measured; every
other test holds it shared while it runs. So a measurement never overlaps another test on
another worker, whatever the distribution mode, and unmeasured tests still run in parallel
with each other.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["lock_path", "held"]


def lock_path(run_id: str) -> Path:
    safe = "".join(c for c in run_id if c.isalnum() or c in "-_")[:64] or "run"
    return Path(tempfile.gettempdir()) / f"perfguard-{safe}.lock"


@contextlib.contextmanager
def held(path: Path, exclusive: bool) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # closing releases the lock
