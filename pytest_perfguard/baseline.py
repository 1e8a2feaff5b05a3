"""Baseline files ``baselines/<machine slug>.json``: load, merge and save (no pytest import).

File format history (bump FORMAT_VERSION on any incompatible change, and say what changed):

- 1 (pytest-perfguard 0.1.0): ``{"format": 1, "machine": fingerprint, "speed": speed score or
  null, "entries": {node id: entry}, "updated": ISO-8601 UTC time}``. ``machine`` is
  :func:`machine.machine_fingerprint` (``{"hardware": ..., "software": ...}``), ``speed`` is
  :func:`machine.speed_score`. An entry is ``model.BaselineEntry.to_json()``, stored as given except that each list in
  ``entry["samples"]`` (metric -> list of floats) is thinned evenly to at most ``max_samples``.
  Added since, readable by older versions (they ignore it): ``entry["runs"]``, one object per saved
  run (``{"latency": p10 level in seconds, "memory_growth": bytes, "process": id}``, the last 10;
  ``model.SavedRun``); an entry without it counts as one run. ``entry["metric_items"]``: for a metric
  recorded from its items, ``{"n": items, "sd": their SD}`` (``sampled``); the mean is in ``metrics``.
  ``entry["samples"]["cpu"]``: the rounds' CPU time; ``entry["clock"]``: the clock the gate judged
  (``"wall"`` when absent; the runs' levels are of that clock).

Files are written with sorted keys and ``indent=1`` so they diff well when committed. A file
that cannot be read is reported (:class:`BaselineError`) and never overwritten.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

from pytest_perfguard.atomic import write_text
from pytest_perfguard.measure import CLOCKS
from pytest_perfguard.model import BaselineEntry, thin

__all__ = [
    "FORMAT_VERSION",
    "MAX_FILE_BYTES",
    "Baseline",
    "entry_problem",
    "BaselineError",
    "baseline_path",
    "git_commit",
    "load_baseline",
    "save_entries",
]

FORMAT_VERSION = 1
MAX_FILE_BYTES = 64 * 2**20  # ~60x the largest file 1000 samples x 100 tests make; a bigger one is not ours
MIN_SAMPLES = 5  # as decide.MIN_SAMPLES: fewer cannot be compared

_ASIDE = "move it aside (or fix it) and save a new baseline with --perf-save"


class BaselineError(Exception):
    """A baseline file cannot be read or written; the message names the file and the remedy."""


@dataclass
class Baseline:
    path: Path
    machine: dict[str, Any]
    speed: dict[str, Any] | None
    entries: dict[str, dict[str, Any]]  # every entry, as stored (a malformed one is kept, never dropped)
    updated: str | None
    problems: dict[str, str] = field(default_factory=dict)  # node id -> why its entry cannot be judged by

    @cached_property
    def valid_entries(self) -> dict[str, BaselineEntry]:
        """Every entry a gate may judge by, read once (``entries`` keeps them all as stored)."""
        return {nodeid: BaselineEntry.from_json(e) for nodeid, e in self.entries.items() if nodeid not in self.problems}

    def entry(self, nodeid: str) -> BaselineEntry | None:
        """The entry a gate may judge by: None when missing or malformed (see ``problems``)."""
        return self.valid_entries.get(nodeid)

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
    ) or (speed is not None and not (speed.get("score") is None or _positive(speed.get("score")))):
        raise BaselineError(
            f"Baseline file {path} has a malformed \"machine\", \"speed\" or \"updated\" field; "
            f"{_ASIDE}."
        )
    return Baseline(Path(path), machine, speed, entries, updated, _problems(entries))


def _problems(entries: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {nodeid: why for nodeid, entry in entries.items() for why in [entry_problem(entry)] if why}


def _real(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _positive(x: Any) -> bool:
    return _real(x) and x > 0


def entry_problem(entry: dict[str, Any]) -> str | None:
    """Why a stored entry cannot be judged by (hand-edited, truncated, another tool's), or None."""
    samples = entry.get("samples")
    if not isinstance(samples, dict) or not isinstance(samples.get("latency"), list):
        return "\"samples\" must be an object holding a \"latency\" list"
    if entry.get("clock", "wall") not in CLOCKS:
        return f"\"clock\" must be one of {', '.join(CLOCKS)}, not {entry.get('clock')!r}"
    if not isinstance(samples.get("cpu", []), list):
        return "\"samples\" \"cpu\" must be a list of CPU seconds"
    for key, word in (("latency", "latency"), ("cpu", "CPU time")):
        values = samples.get(key, [])
        bad = [x for x in values if not _positive(x)]
        if bad:
            return (f"{len(bad)} of its {len(values)} {word} samples are not finite positive seconds "
                    f"(e.g. {bad[0]!r})")
        if 0 < len(values) < MIN_SAMPLES:
            return f"it holds {len(values)} {word} samples; at least {MIN_SAMPLES} are needed to compare"
    latency = samples["latency"]
    if entry.get("unit") not in ("call", "item") and (latency or entry.get("unit") is not None):
        return f"\"unit\" must be \"call\" or \"item\", not {entry.get('unit')!r}"
    items = entry.get("items")
    if items is not None and (not isinstance(items, int) or isinstance(items, bool) or items < 1):
        return f"\"items\" must be a positive integer or null, not {items!r}"
    for key in ("memory_growth", "gpu_memory_growth"):
        if entry.get(key) is not None and not _real(entry[key]):
            return f"\"{key}\" must be a finite number of bytes or null, not {entry[key]!r}"
    if entry.get("instructions") is not None and not _positive(entry["instructions"]):
        return f"\"instructions\" must be a positive count or null, not {entry['instructions']!r}"
    metrics = entry.get("metrics", {})
    if not isinstance(metrics, dict) or not all(_real(v) for v in metrics.values()):
        return "\"metrics\" must be an object of metric name -> finite number"
    problem = _metric_items_problem(entry.get("metric_items", {}), metrics)
    if problem:
        return problem
    summary = entry.get("summary", {})
    if not isinstance(summary, dict) or not all(v is None or _real(v) for v in summary.values()):
        return "\"summary\" must be an object of statistic -> finite number or null"
    return _runs_problem(entry.get("runs", []))


def _metric_items_problem(items: Any, metrics: dict[str, Any]) -> str | None:
    """Why an entry's ``metric_items`` (``{name: {"n": items, "sd": their SD}}``) cannot be judged by."""
    if not isinstance(items, dict) or not all(isinstance(v, dict) for v in items.values()):
        return "\"metric_items\" must be an object of metric name -> {\"n\": ..., \"sd\": ...}"
    for name, spread in items.items():
        if name not in metrics:
            return f"\"metric_items\" has {name!r}, which \"metrics\" does not"
        n, sd = spread.get("n"), spread.get("sd")
        if not isinstance(n, int) or isinstance(n, bool) or n < 2:
            return f"{name!r}'s \"n\" must be an integer >= 2 (its items), not {n!r}"
        if not _real(sd) or sd < 0:
            return f"{name!r}'s \"sd\" must be a finite number >= 0, not {sd!r}"
    return None


def _runs_problem(runs: Any) -> str | None:
    """Why an entry's saved runs (each ``{"latency", "memory_growth", "process"}``) cannot be judged by."""
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        return "\"runs\" must be a list of objects"
    for i, run in enumerate(runs):
        if run.get("latency") is not None and not _positive(run["latency"]):
            return f"run {i + 1}'s \"latency\" must be finite positive seconds or null, not {run['latency']!r}"
        if run.get("memory_growth") is not None and not _real(run["memory_growth"]):
            return f"run {i + 1}'s \"memory_growth\" must be a finite number of bytes or null"
        if run.get("process") is not None and not isinstance(run["process"], str):
            return f"run {i + 1}'s \"process\" must be a string or null"
    return None


def load_baseline(path: Path) -> Baseline | None:
    """Read a baseline file; None if it does not exist, BaselineError if it is unusable."""
    path = Path(path)
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise BaselineError(f"Baseline file {path} is {kind}; {_ASIDE}.")
        if st.st_size > MAX_FILE_BYTES:
            raise BaselineError(f"Baseline file {path} is {st.st_size} bytes, more than the "
                                f"{MAX_FILE_BYTES} a baseline can be; {_ASIDE}.")
        with open(path, "rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)  # bounded even if it grew since the stat
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BaselineError(
            f"Cannot read baseline file {path} ({exc.strerror or exc}); check that it is a "
            f"readable file."
        ) from exc
    if len(raw) > MAX_FILE_BYTES:
        raise BaselineError(f"Baseline file {path} is larger than {MAX_FILE_BYTES} bytes; {_ASIDE}.")
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


def _bound_entry(entry: dict[str, Any], max_samples: int) -> dict[str, Any]:
    samples = entry.get("samples")
    if not isinstance(samples, dict):
        return entry
    bounded = {
        metric: thin(values, max_samples) if isinstance(values, list) else values
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
                problems=_problems(merged),
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
