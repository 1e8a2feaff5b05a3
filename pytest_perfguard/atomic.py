"""Atomic file writes: a temp file in the same directory, fsync, ``os.replace`` (no pytest).

Leftovers. The temp file ``.<name>.XXXXXXXX.tmp`` is removed on every exit that Python sees:
an exception, Ctrl-C, and (see :class:`cleanup_on_termination`) SIGTERM or SIGHUP. Only
SIGKILL (or a power cut) can leave one behind; the next write of the same file removes it.

That removal is safe against a concurrent writer because every writer holds an exclusive
``flock`` on its own temp file from just after creating it until it has been renamed into
place. A temp file is removed only if it is older than :data:`STALE_AFTER_S` (which covers the
instant between creating the file and locking it) *and* a non-blocking ``flock`` on it
succeeds (no live writer holds it) *and* the name still refers to the inode that was locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import stat
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType, TracebackType

__all__ = ["STALE_AFTER_S", "cleanup_on_termination", "remove_stale_temps", "write_text"]

# A temp file this much older than now, which no writer holds, is a dead writer's leftover.
STALE_AFTER_S = 60.0
# tempfile.mkstemp's random part: 8 characters of this alphabet.
_RANDOM = r"[a-z0-9_]{8}"
_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class _Terminated(BaseException):
    """Raised by the signal handler of :class:`cleanup_on_termination` to unwind the stack."""

    def __init__(self, signum: int, owner: cleanup_on_termination) -> None:
        super().__init__(signum)
        self.signum = signum
        self.owner = owner


class cleanup_on_termination:  # lower case: used like a function, ``with cleanup_on_termination():``
    """While inside, SIGTERM and SIGHUP unwind the stack before they kill the process.

    A signal whose handler is the default (kill the process at once, running nothing) gets a
    handler that raises an exception instead, so ``finally`` clauses and ``except BaseException``
    clean-ups run; on leaving, the default handler is restored and the signal re-raised, so the
    process still dies of that signal, as it would have. Signals with any other handler
    (Python's, the user's, ignored) are left alone: they already let clean-ups run, or do not
    kill. Nested uses and other threads than the main one do nothing.
    """

    def __init__(self) -> None:
        self._installed: list[int] = []
        self._inside = False

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self._inside:
            raise _Terminated(signum, self)
        _die(signum)  # arrived while leaving: nothing left to clean up

    def __enter__(self) -> cleanup_on_termination:
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in _SIGNALS:
            with contextlib.suppress(ValueError, OSError):
                if signal.getsignal(sig) == signal.SIG_DFL:
                    signal.signal(sig, self._handler)
                    self._installed.append(sig)
        self._inside = True
        return self

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._inside = False
        for sig in self._installed:
            with contextlib.suppress(ValueError, OSError):
                signal.signal(sig, signal.SIG_DFL)
        self._installed.clear()
        if isinstance(exc, _Terminated) and exc.owner is self:
            _die(exc.signum)


def _die(signum: int) -> None:
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)
    raise SystemExit(128 + signum)  # only if the signal is blocked in this thread


def remove_stale_temps(path: Path, *, older_than: float = STALE_AFTER_S) -> list[str]:
    """Remove dead writers' temp files ``.<name>.XXXXXXXX.tmp`` next to ``path``; their names.

    Never raises; a file that cannot be checked is left alone (see the module docstring).
    """
    path = Path(path)
    pattern = re.compile(re.escape(f".{path.name}.") + _RANDOM + r"\.tmp")
    try:
        names = os.listdir(path.parent)
    except OSError:
        return []
    now = time.time()
    removed: list[str] = []
    for name in names:
        if not pattern.fullmatch(name):
            continue
        candidate = path.parent / name
        try:
            fd = os.open(candidate, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < older_than:
                continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: a writer holds it
            current = os.lstat(candidate)
            if (current.st_ino, current.st_dev) == (st.st_ino, st.st_dev):
                os.unlink(candidate)
                removed.append(name)
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed


def write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` all at once; the temp file never outlives a failure.

    An existing file keeps its permission bits; a new one gets 0644. Stale temp files of
    earlier writes of ``path`` that were killed are removed first (they may be large).
    """
    path = Path(path)
    with cleanup_on_termination():
        remove_stale_temps(path)
        try:
            mode = os.stat(path).st_mode & 0o777
        except FileNotFoundError:
            mode = 0o644
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            # Held until the rename is done: marks the temp file live for remove_stale_temps.
            fcntl.flock(fd, fcntl.LOCK_EX)
            with os.fdopen(fd, "w", encoding="utf-8", closefd=False) as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        finally:
            os.close(fd)
    with contextlib.suppress(OSError):  # make the rename itself durable, where supported
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
