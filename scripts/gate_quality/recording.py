"""Sessions of measurements of the workloads, each timed by the plugin's own loop.

Every measurement is one ``pytest_perfguard.measure.measure_calls(fn, settings)`` call, exactly as
``perf(fn)`` runs it in a perf test: one warm-up call, calibration of the calls per round so that a
round lasts >= ``min_round_time`` (x1.2 headroom), GC collected before and off during each round,
rounds until both ``min_rounds`` and ``max_time`` are reached, peak memory measured around it. Its
``Measurement.samples`` (seconds per call, one per round, in time order) are what the gate judges
on the wall clock (the plugin's default ``--perf-clock``); ``cpu_samples`` are kept as well.

The number of rounds is the loop's, so it varies between measurements: a recording's arrays are
padded with NaN to the longest measurement (``valid`` takes a measurement's rounds back out).

A recording is a dict of arrays: ``samples`` and ``cpu_samples`` (sessions, variants[, blocks],
rounds), ``loops`` (calls per round) and ``stamps`` (seconds since the start) per measurement,
``variants``, ``seed``, the ``Settings`` fields, ``date``. ``save``/``load`` keep it in an ``.npz``.
Recordings made by the scripts before this package (their own loop: 3 warm-up calls, x1.05
calibration, a fixed number of rounds) load too; they have ``rounds`` and ``round_s`` instead of
the ``Settings`` fields.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from pytest_perfguard.measure import Measurement, Settings, measure_calls

from .workload import VARIANTS, WORKLOADS

SETTING_FIELDS = ("min_rounds", "max_time", "min_round_time", "warmup_calls", "hard_cap_factor", "min_cap")


def settings(min_rounds: int | None = None, max_time: float | None = None,
             min_round_time: float | None = None) -> Settings:
    """The plugin's defaults (``Settings()``), with the given fields changed."""
    given = {"min_rounds": min_rounds, "max_time": max_time, "min_round_time": min_round_time}
    return dataclasses.replace(Settings(), **{k: v for k, v in given.items() if v is not None})


def measure(name: str, timing: Settings) -> Measurement:
    """One measurement of workload ``name``, as a perf test's ``perf(fn)`` takes it."""
    m, _ = measure_calls(WORKLOADS[name], timing)
    return m


def stack(cells: np.ndarray, attr: str) -> np.ndarray:
    """``cells``' (an object array of Measurements or None) ``attr`` lists, NaN-padded to one length."""
    width = max((len(getattr(m, attr)) for m in cells.flat if m is not None), default=0)
    out = np.full(cells.shape + (width,), np.nan)
    for idx in np.ndindex(cells.shape):
        m = cells[idx]
        if m is not None:
            values = getattr(m, attr)
            out[idx][: len(values)] = values
    return out


def valid(x: np.ndarray) -> np.ndarray:
    """One measurement's rounds, without the padding."""
    return x[~np.isnan(x)]


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _recording(cells: np.ndarray, stamps: np.ndarray, seed: int, timing: Settings) -> dict[str, Any]:
    loops = np.array([m.loops if m is not None else 0 for m in cells.flat]).reshape(cells.shape)
    return {"samples": stack(cells, "samples"), "cpu_samples": stack(cells, "cpu_samples"), "loops": loops,
            "stamps": stamps, "variants": np.array(VARIANTS), "seed": seed, "date": _now(),
            **{f: getattr(timing, f) for f in SETTING_FIELDS}}


def record(sessions: int, timing: Settings, seed: int) -> dict[str, Any]:
    """``sessions`` sessions; each measures the five variants once, in a random order."""
    rng = np.random.default_rng(seed)
    cells = np.empty((sessions, len(VARIANTS)), dtype=object)
    stamps = np.empty((sessions, len(VARIANTS)))
    t_start = time.time()
    for s in range(sessions):
        for v in rng.permutation(len(VARIANTS)):
            stamps[s, v] = time.time() - t_start
            cells[s, v] = measure(VARIANTS[v], timing)
        if s % 10 == 9 or s == sessions - 1:
            print(f"  session {s + 1}/{sessions} done, {time.time() - t_start:.0f} s", file=sys.stderr)
    return _recording(cells, stamps, seed, timing)


def record_blocks(sessions: int, timing: Settings, seed: int, blocks: int) -> dict[str, Any]:
    """Like :func:`record`, but every workload is measured ``blocks`` times back to back (the
    re-measurements a confirm-on-regression gate would take) and ``A2`` is skipped: arrays have a
    blocks axis after the variants, and ``A2`` stays in ``variants`` with NaN samples so that
    indices match ``VARIANTS``."""
    rng = np.random.default_rng(seed)
    cells = np.full((sessions, len(VARIANTS), blocks), None, dtype=object)
    stamps = np.full((sessions, len(VARIANTS), blocks), np.nan)
    used = [k for k, v in enumerate(VARIANTS) if v != "A2"]
    t_start = time.time()
    for s in range(sessions):
        for v in rng.permutation(used):
            for b in range(blocks):
                stamps[s, v, b] = time.time() - t_start
                cells[s, v, b] = measure(VARIANTS[v], timing)
        if s % 5 == 4 or s == sessions - 1:
            print(f"  session {s + 1}/{sessions} done, {time.time() - t_start:.0f} s", file=sys.stderr)
    rec = _recording(cells, stamps, seed, timing)
    rec["blocks"] = blocks
    return rec


def save(rec: dict[str, Any], path: Path) -> None:
    np.savez_compressed(path, **rec)


def load(path: Path) -> dict[str, Any]:
    with np.load(path) as z:
        rec = {k: (z[k].item() if z[k].ndim == 0 else z[k]) for k in z.files}
    rec["date"] = str(rec["date"])
    return rec


def own_loop(rec: dict[str, Any]) -> bool:
    """A recording made by the scripts' own round loop, before this package."""
    return "min_rounds" not in rec


def timing_line(rec: dict[str, Any]) -> str:
    """How the recording's measurements were timed, and how many rounds and calls per round they got."""
    data = rec["samples"]
    if own_loop(rec):
        return (f"Timing: the script's own loop (before `measure_calls`): 3 warm-up calls, calls per round "
                f"calibrated to >= {float(rec['round_s']) * 1e3:.0f} ms (x1.05), {data.shape[-1]} rounds "
                f"per measurement")
    timing = Settings(**{f: type(getattr(Settings(), f))(rec[f]) for f in SETTING_FIELDS})
    which = "the plugin's defaults" if timing == Settings() else "not the plugin's defaults"
    rounds = np.sum(~np.isnan(data), axis=-1)
    rounds = rounds[rounds > 0]
    loops = rec["loops"][rec["loops"] > 0]
    return (f"Timing: `pytest_perfguard.measure.measure_calls` with `Settings(min_rounds={timing.min_rounds}, "
            f"max_time={timing.max_time:g}, min_round_time={timing.min_round_time:g}, "
            f"warmup_calls={timing.warmup_calls})` ({which}: `--perf-min-rounds`, `--perf-max-time`, "
            f"`--perf-min-round-time`), as `perf(fn)` runs it (calls per round calibrated x1.2, GC off in a "
            f"round, peak memory measured); rounds per measurement median {np.median(rounds):.0f} "
            f"(min {rounds.min()}, max {rounds.max()}); calls per round median {np.median(loops):.0f}")
