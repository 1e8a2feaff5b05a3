"""Re-running one perf test in a fresh process: to profile a failure (which arguments the re-run gets,
and what the report shows), and to confirm a suspected regression (``measure_fresh``).

The re-run is the same test, alone, with the user's options (``--perfcases-variant=naive``
and the like) minus what would select other tests, distribute them, write reports or
baselines, or profile again. Nothing here imports pytest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .measure import Measurement
from .model import measurement_from_json
from .profile import ProfileError, format_section, profile_test

__all__ = ["confirm_args", "rerun_args", "profile_failure", "default_profile_paths", "measure_fresh"]

# Options dropped from the re-run; the value says whether they take a separate value.
_DROP = {
    "-k": True, "-m": True, "-n": True, "--numprocesses": True, "--dist": True, "--maxprocesses": True,
    "--junitxml": True, "--junit-xml": True, "--basetemp": True, "--durations": True,
    "--perf-json": True, "--perf-markdown": True, "--perf-profile": True, "--perf-profile-dir": True,
    "--perf-profile-timeout": True, "--perf-min-rounds": True, "--perf-max-time": True,
    "-x": False, "--exitfirst": False, "--lf": False, "--last-failed": False, "--ff": False,
    "--failed-first": False, "--sw": False, "--stepwise": False, "--perf-save": False, "--perf": False,
    "-v": False, "-vv": False, "-q": False, "--verbose": False, "--quiet": False,
    # pytest-benchmark's files: a re-run of one test must not add a save or overwrite the run's JSON
    "--benchmark-autosave": False, "--benchmark-save": True, "--benchmark-save-data": False,
    "--benchmark-json": True, "--benchmark-histogram": False, "--benchmark-cprofile-dump": False,
}
# The re-run measures briefly: the profile shows where time goes, it does not gate anything.
RERUN_TIMING = ["--perf-min-rounds=3", "--perf-max-time=0.5"]


def _is_target(token: str, rootdir: Path, targets: Sequence[str] | None) -> bool:
    if "::" in token:
        return True
    if targets is not None:  # what pytest itself parsed as test paths: exact
        return token in targets
    return (rootdir / token).exists() or os.path.exists(token)


def rerun_args(args: Sequence[str], rootdir: Path, *, xdist: bool, targets: Sequence[str] | None = None) -> list[str]:
    """The user's invocation args, filtered for a one-test re-run under the profiler.

    ``targets``: the test paths pytest parsed (``config.args``), so that an option's separate value
    that happens to be an existing path (``--perf-baselines baselines``) stays with its option;
    without them, a token that exists on disk is taken for a test path.
    """
    return [*_kept(args, rootdir, targets, _DROP), "--perf", "--perf-profile=never", *RERUN_TIMING,
            *(["-p", "no:xdist"] if xdist else [])]


# A confirmation measures as the run did (its rounds are judged), and judges nothing itself.
_DROP_CONFIRM = {k: v for k, v in _DROP.items() if k not in ("--perf-min-rounds", "--perf-max-time")} | {
    "--perf-baselines": True, "--perf-confirm": True, "--perf-require-baseline": False,
    "--perf-instructions": False}


def confirm_args(args: Sequence[str], rootdir: Path, *, targets: Sequence[str] | None = None) -> list[str]:
    """The user's invocation args, filtered for measuring one test again in a fresh process."""
    return [*_kept(args, rootdir, targets, _DROP_CONFIRM), "--perf", "--perf-profile=never", "--perf-confirm=0",
            "-p", "no:xdist", "-p", "no:cacheprovider"]


def measure_fresh(nodeid: str, *, rootdir: Path, args: list[str], timeout: float) -> Measurement | None:
    """Measure one test in a fresh pytest process (its own memory layout, hash seed and allocator
    state), judged by nothing; its ``--perf-json`` measurement, or None when it produced none."""
    with tempfile.TemporaryDirectory(prefix="perfguard-confirm-") as tmp:
        out = Path(tmp) / "out.json"
        command = [sys.executable, "-m", "pytest", nodeid, *args, f"--perf-baselines={tmp}", f"--perf-json={out}"]
        try:
            subprocess.run(command, cwd=rootdir, capture_output=True, timeout=timeout, env=_fresh_env())
            tests = json.loads(out.read_text())["tests"]
        except (OSError, ValueError, KeyError, subprocess.TimeoutExpired):
            return None
    found = [t.get("measurement") for t in tests if t.get("nodeid") == nodeid]
    return measurement_from_json(found[0]) if found and found[0] and found[0].get("samples") else None


def _fresh_env() -> dict[str, str]:
    """The environment without the parent's pytest and xdist variables: the fresh process is no xdist
    worker (pytest-benchmark turns itself off where ``PYTEST_XDIST_WORKER`` is set)."""
    return {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST" and not k.startswith("PYTEST_XDIST_")}


def _kept(args: Sequence[str], rootdir: Path, targets: Sequence[str] | None, drop: dict[str, bool]) -> list[str]:
    """``args`` without test paths and without the options in ``drop`` (with their values)."""
    out: list[str] = []
    tokens = list(args)
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        name = tok.split("=", 1)[0]
        if not tok.startswith("-"):
            i += 1  # a test path or node id: the re-run names its own
            continue
        if _glued(tok):
            i += 1
            continue
        if name in drop:
            i += 2 if drop[name] and "=" not in tok else 1
            continue
        out.append(tok)
        # a separate value ("--perfcases-variant naive") belongs to its option
        if "=" not in tok and i + 1 < len(tokens) and not tokens[i + 1].startswith("-") \
                and not _is_target(tokens[i + 1], rootdir, targets):
            out.append(tokens[i + 1])
            i += 1
        i += 1
    return out


def _glued(tok: str) -> bool:
    """``-k`` style short options may carry their value glued on: ``-kcounter``."""
    return len(tok) > 2 and tok[1] != "-" and tok[:2] in ("-k", "-m", "-n")


def default_profile_paths(rootdir: Path, test_file: Path, configured: Sequence[str]) -> list[str]:
    if configured:
        return [str(rootdir / p) for p in configured]
    paths = [str(test_file.parent)]
    if (rootdir / "src").is_dir():
        paths.insert(0, str(rootdir / "src"))
    return paths


def profile_failure(nodeid: str, *, rootdir: Path, outdir: Path, args: list[str], paths: list[str],
                    timeout: float) -> dict[str, Any]:
    """Profile one test; a JSON-safe dict with the paths and hot lines, or with ``error``."""
    try:
        res = profile_test(nodeid, rootdir=rootdir, outdir=outdir, pytest_args=args, profile_paths=paths,
                           timeout=timeout)
    except ProfileError as exc:
        return {"error": f"profiling failed: {exc}"}
    except Exception as exc:  # the profiler must never cost the test result
        return {"error": f"profiling failed unexpectedly: {type(exc).__name__}: {exc}"}
    return {
        "json": str(res.json_path),
        "html": str(res.html_path),
        "elapsed_s": res.elapsed_s,
        "hot_lines": [asdict(h) for h in res.hot_lines],
        "section": format_section(res, rootdir),
    }
