"""Baseline files ``baselines/<machine slug>.json``: load, merge and save (no pytest import).

File format history (bump FORMAT_VERSION on any incompatible change, and say what changed):

- 1 (pytest-perfguard 0.1.0): ``{"format": 1, "machine": fingerprint, "speed": speed score or
  null, "entries": {node id: entry}, "updated": ISO-8601 UTC time}``. ``machine`` is
  :func:`machine_fingerprint` (``{"hardware": ..., "software": ...}``), ``speed`` is
  :func:`speed_score`. An entry is the plugin's dict, stored as given except that each list in
  ``entry["samples"]`` (metric -> list of floats) is thinned evenly to at most ``max_samples``.

Files are written with sorted keys and ``indent=1`` so they diff well when committed. A file
that cannot be read is reported (:class:`BaselineError`) and never overwritten.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pytest_perfguard.atomic import write_text
from pytest_perfguard.machine import (
    compare_fingerprints,
    machine_fingerprint,
    machine_slug,
    speed_score,
)

__all__ = [
    "FORMAT_VERSION",
    "Baseline",
    "BaselineError",
    "baseline_path",
    "compare_fingerprints",
    "git_commit",
    "load_baseline",
    "machine_fingerprint",
    "machine_slug",
    "save_entries",
    "speed_score",
    "thin_samples",
]

FORMAT_VERSION = 1

_ASIDE = "move it aside (or fix it) and save a new baseline with --perf-save"


class BaselineError(Exception):
    """A baseline file cannot be read or written; the message names the file and the remedy."""


@dataclass
class Baseline:
    path: Path
    machine: dict[str, Any]
    speed: dict[str, Any] | None
    entries: dict[str, dict[str, Any]]
    updated: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "machine": self.machine,
            "speed": self.speed,
            "entries": self.entries,
            "updated": self.updated,
        }


def baseline_path(directory: Path, slug: str) -> Path:
    """``<directory>/<slug>.json``; ``slug`` must be a plain file name (as machine_slug makes)."""
    if not slug or slug in (".", "..") or "/" in slug or "\\" in slug or "\0" in slug:
        raise ValueError(f"machine name {slug!r} cannot be used as a baseline file name")
    return Path(directory) / f"{slug}.json"


def _validate(path: Path, data: Any) -> Baseline:
    if not isinstance(data, dict):
        raise BaselineError(
            f"Baseline file {path} holds a JSON {type(data).__name__}, not an object; {_ASIDE}."
        )
    if "format" not in data:
        raise BaselineError(
            f"Baseline file {path} has no \"format\" key, so it is not a pytest-perfguard "
            f"baseline; {_ASIDE}."
        )
    fmt = data["format"]
    if type(fmt) is not int or fmt != FORMAT_VERSION:
        hint = (
            "upgrade pytest-perfguard to read it, or use another --perf-machine"
            if type(fmt) is int and fmt > FORMAT_VERSION
            else _ASIDE
        )
        raise BaselineError(
            f"Baseline file {path} has format {fmt!r}, but this pytest-perfguard reads format "
            f"{FORMAT_VERSION} only; {hint}."
        )
    entries = data.get("entries")
    if not isinstance(entries, dict) or not all(isinstance(e, dict) for e in entries.values()):
        raise BaselineError(
            f"Baseline file {path} has malformed \"entries\" (expected an object of node id -> "
            f"object); {_ASIDE}."
        )
    machine, speed, updated = data.get("machine", {}), data.get("speed"), data.get("updated")
    if not isinstance(machine, dict) or not (speed is None or isinstance(speed, dict)) or not (
        updated is None or isinstance(updated, str)
    ):
        raise BaselineError(
            f"Baseline file {path} has a malformed \"machine\", \"speed\" or \"updated\" field; "
            f"{_ASIDE}."
        )
    return Baseline(Path(path), machine, speed, entries, updated)


def load_baseline(path: Path) -> Baseline | None:
    """Read a baseline file; None if it does not exist, BaselineError if it is unusable."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BaselineError(
            f"Cannot read baseline file {path} ({exc.strerror or exc}); check that it is a "
            f"readable file."
        ) from exc
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BaselineError(f"Baseline file {path} is not UTF-8 text; {_ASIDE}.") from exc
    except json.JSONDecodeError as exc:
        raise BaselineError(
            f"Baseline file {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: "
            f"{exc.msg}), perhaps truncated; {_ASIDE}."
        ) from exc
    return _validate(path, data)


def thin_samples(values: list[Any], max_samples: int) -> list[Any]:
    """Keep at most ``max_samples`` values, evenly spaced, in order, first and last included."""
    n = len(values)
    if n <= max_samples:
        return list(values)
    if max_samples == 1:
        return [values[(n - 1) // 2]]
    # (n - 1) / (max_samples - 1) > 1, so the floored indices are strictly increasing.
    return [values[i * (n - 1) // (max_samples - 1)] for i in range(max_samples)]


def _bound_entry(entry: dict[str, Any], max_samples: int) -> dict[str, Any]:
    samples = entry.get("samples")
    if not isinstance(samples, dict):
        return entry
    bounded = {
        metric: thin_samples(values, max_samples) if isinstance(values, list) else values
        for metric, values in samples.items()
    }
    return {**entry, "samples": bounded}


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """flock on the sidecar ``<file>.lock``, removed on exit, SIGTERM and SIGHUP included.

    Removing it is safe because a waiter that wakes holding the lock on an unlinked (or
    replaced) lock file notices the inode changed and starts again. One left by a SIGKILL is
    taken over, and removed, by the next save.
    """
    from pytest_perfguard.atomic import cleanup_on_termination

    lock = path.with_name(path.name + ".lock")
    with cleanup_on_termination():
        while True:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                held = os.fstat(fd)
                try:
                    current = os.stat(lock)
                except FileNotFoundError:
                    current = None
            except BaseException:
                os.close(fd)
                raise
            if current is not None and (current.st_ino, current.st_dev) == (held.st_ino, held.st_dev):
                break
            os.close(fd)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.unlink(lock)
            os.close(fd)  # closing releases the flock


def _dumps(baseline: Baseline) -> str:
    return json.dumps(baseline.to_json(), sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def save_entries(
    path: Path,
    entries: dict[str, dict[str, Any]],
    machine: dict[str, Any],
    speed: dict[str, Any] | None,
    max_samples: int = 1000,
) -> Baseline:
    """Merge ``entries`` into the baseline file at ``path`` and write it atomically.

    Only the given node ids are replaced; every other entry is kept. ``machine`` replaces the
    stored fingerprint; ``speed`` replaces the stored score unless it is None. The whole
    read-merge-write runs under an exclusive lock, so concurrent savers lose nothing. A file
    that cannot be read raises BaselineError and is left untouched.
    """
    path = Path(path)
    if max_samples < 1:
        raise ValueError(f"max_samples must be at least 1, got {max_samples}")
    bad = [k for k, e in entries.items() if not isinstance(k, str) or not isinstance(e, dict)]
    if bad:
        raise TypeError(f"baseline entries must map node id (str) -> dict; bad keys: {bad!r}")
    new = {nodeid: _bound_entry(entry, max_samples) for nodeid, entry in entries.items()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _exclusive_lock(path):
            old = load_baseline(path)
            merged = dict(old.entries) if old is not None else {}
            merged.update(new)
            baseline = Baseline(
                path=path,
                machine=machine,
                speed=speed if speed is not None else (old.speed if old is not None else None),
                entries=merged,
                updated=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            )
            write_text(path, _dumps(baseline))  # TypeError here if an entry is not JSON
    except OSError as exc:
        raise BaselineError(
            f"Cannot write baseline file {path} ({exc.strerror or exc}); make {path.parent} "
            f"writable or point perfguard_baselines elsewhere (any existing baseline is unchanged)."
        ) from exc
    return baseline


def git_commit(cwd: Path) -> str | None:
    """``git rev-parse HEAD``, plus ``-dirty`` if tracked files changed; None on any failure.

    Untracked files do not count as dirty: a freshly written, not yet committed baseline file
    would otherwise mark every following run dirty.
    """
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}

    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(
                ["git", *args],
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=5,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.SubprocessError, ValueError):
            return None
        return proc.stdout if proc.returncode == 0 else None

    head = git("rev-parse", "--verify", "HEAD")
    if head is None or not head.strip():
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    if status is None:
        return None
    return head.strip() + ("-dirty" if status.strip() else "")
