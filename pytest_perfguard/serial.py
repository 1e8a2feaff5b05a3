"""Keeping measurements alone under pytest-xdist (no pytest import).

Workers share one lock file. A perf test holds it exclusively while it is measured; every
other test holds it shared while it runs. So a measurement never overlaps another test on
another worker, whatever the distribution mode, and unmeasured tests still run in parallel
with each other.

The controller removes the file when the session ends (:func:`remove_lock`). Removing it is
safe at any moment: :func:`held` checks, once it has the lock, that the path still names the
file it locked, and starts again on a fresh file if not, so every holder always locks the
same file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["lock_path", "held", "remove_lock", "turn"]


def lock_path(run_id: str) -> Path:
    safe = "".join(c for c in run_id if c.isalnum() or c in "-_")[:64] or "run"
    return Path(tempfile.gettempdir()) / f"perfguard-{safe}.lock"


def _same_file(fd: int, path: Path) -> bool:
    held_st = os.fstat(fd)
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return False
    return (current.st_ino, current.st_dev) == (held_st.st_ino, held_st.st_dev)


@contextlib.contextmanager
def held(path: Path, exclusive: bool) -> Iterator[None]:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            if _same_file(fd, path):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the file was removed (or replaced) while we waited: lock the current one
    try:
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextlib.contextmanager
def turn(path: Path, name: str, limit: int) -> Iterator[bool]:
    """Hold the lock exclusively and take one of the run's ``limit`` turns named ``name`` (a counter in a
    file beside the lock, shared by the workers): yields whether a turn was left."""
    counter = path.with_name(f"{path.name}.{name}")
    with held(path, exclusive=True):
        try:
            taken = int(counter.read_text(encoding="ascii") or 0)
        except (OSError, ValueError):
            taken = 0
        if taken < limit:
            counter.write_text(str(taken + 1), encoding="ascii")
        yield taken < limit


def remove_lock(path: Path) -> bool:
    """Remove the run's lock file unless a test holds it right now; True if it is gone.

    Meant for the controller once the workers are done. A worker still inside a test (a run
    stopped early) keeps the file, which is then left behind; nothing blocks or raises.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if not _same_file(fd, path):
            return False  # replaced since we opened it: not ours to judge
        for counter in path.parent.glob(f"{path.name}.*"):  # ``turn``'s counters
            counter.unlink(missing_ok=True)
        os.unlink(path)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
