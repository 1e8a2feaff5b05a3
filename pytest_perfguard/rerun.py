"""Re-running one perf test in a fresh process: to profile a failure (which arguments the re-run gets,
and what the report shows), and to confirm a suspected regression (``measure_fresh``).

The re-run is the same test, alone, with the user's options (``--perfcases-variant=naive``
and the like) minus what would select other tests, distribute them, write reports or
baselines, or profile again. Nothing here imports pytest.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .measure import Measurement
from .model import measurement_from_json
from .profile import ProfileError, format_section, profile_test

__all__ = ["confirm_args", "rerun_args", "profile_command", "profile_failure", "profile_paths", "measure_fresh"]

# Options dropped from the re-run: they select or distribute other tests, write this run's outputs (reports,
# baselines, coverage, caches), stop for a debugger, or profile again. The value says whether the option
# takes a separate value: True (always), False (never), None (optional: the next token, unless it starts
# with "-" or is a test path).
_DROP: dict[str, bool | None] = {
    "-k": True, "-m": True, "-n": True, "--numprocesses": True, "--dist": True, "--maxprocesses": True,
    "-f": False, "--looponfail": False,
    "--junitxml": True, "--junit-xml": True, "--junitprefix": True, "--junit-prefix": True, "--basetemp": True,
    "--durations": True, "--html": True, "--self-contained-html": False, "--resultlog": True,
    "--cov": None, "--cov-report": True, "--cov-append": False, "--cov-fail-under": True,
    # pytest-benchmark's files: a re-run of one test must not add a save or overwrite the run's JSON
    "--benchmark-save": True, "--benchmark-autosave": False, "--benchmark-json": True,
    "--benchmark-histogram": None, "--benchmark-save-data": False, "--benchmark-cprofile-dump": None,
    "--pdb": False, "--trace": False, "--pdbcls": True,
    "--perf-json": True, "--perf-markdown": True, "--perf-profile": True, "--perf-profile-dir": True,
    "--perf-profile-timeout": True, "--perf-profile-limit": True, "--perf-min-rounds": True, "--perf-max-time": True,
    "--perf-confirm": True, "--perf-profile-region": True, "--perf-only": True,
    "-x": False, "--exitfirst": False, "--lf": False, "--last-failed": False, "--ff": False,
    "--failed-first": False, "--nf": False, "--new-first": False, "--sw": False, "--stepwise": False,
    "--sw-skip": False, "--stepwise-skip": False, "--cache-clear": False, "--lfnf": True,
    "--last-failed-no-failures": True, "--perf-save": False, "--perf": False,
    "-v": False, "-vv": False, "-q": False, "--verbose": False, "--quiet": False,
}


def rerun_args(args: Sequence[str], paths: Sequence[str], *, xdist: bool) -> list[str]:
    """The user's invocation args for a one-test profile re-run: every option and its value is kept
    (pytest parses them again), except the test paths and what ``_DROP`` names.

    ``paths``: the positional arguments pytest's own parser read (``config.option.file_or_dir``).
    The re-run selects its test by node id (``--perf-only``), so a path that is kept costs only
    its collection.
    """
    return [*_kept(args, paths, _DROP), "--perf", "--perf-profile=never", "--perf-confirm=0",
            *(["-n", "0"] if xdist else [])]


def profile_command(nodeid: str, args: Sequence[str], paths: Sequence[str]) -> str:
    """The command (run from the rootdir) that profiles one test the way a failure is profiled."""
    kept = _kept(args, paths, _DROP)
    only = [f"--perf-only={nodeid}"] if set(kept) & set(paths) else []  # a path kept would collect more tests
    return shlex.join(["python", "-m", "pytest", nodeid, *kept, *only, "--perf", "--perf-profile=always"])


# A confirmation measures as the run did (its rounds are judged), and judges nothing itself.
_DROP_CONFIRM = {k: v for k, v in _DROP.items() if k not in ("--perf-min-rounds", "--perf-max-time")} | {
    "--perf-baselines": True, "--perf-require-baseline": False, "--perf-instructions": False}


def confirm_args(args: Sequence[str], paths: Sequence[str], *, xdist: bool) -> list[str]:
    """The user's invocation args, filtered for measuring one test again in a fresh process."""
    return [*_kept(args, paths, _DROP_CONFIRM), "--perf", "--perf-profile=never", "--perf-confirm=0",
            *(["-n", "0"] if xdist else []), "-p", "no:cacheprovider"]


def measure_fresh(nodeid: str, *, rootdir: Path, args: list[str], timeout: float) -> Measurement | None:
    """Measure one test in a fresh pytest process (its own memory layout, hash seed and allocator
    state), judged by nothing; its ``--perf-json`` measurement, or None when it produced none."""
    with tempfile.TemporaryDirectory(prefix="perfguard-confirm-") as tmp:
        out = Path(tmp) / "out.json"
        command = [sys.executable, "-m", "pytest", nodeid, *args, f"--perf-only={nodeid}", f"--perf-baselines={tmp}",
                   f"--perf-json={out}"]
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


def _kept(args: Sequence[str], paths: Sequence[str], drop: dict[str, bool | None]) -> list[str]:
    """``args`` without the options in ``drop`` (with their values) and without the test paths.

    A token is taken for a test path only when every occurrence of that string on the command line is
    one of the ``paths`` pytest's parser read: an option's separate value (``--perf-baselines baselines``)
    is never dropped, whatever exists on disk, and a path that is also some option's value stays.
    Everything after ``--`` is a test path.
    """
    given, parsed = Counter(args), Counter(paths)
    only_paths = {token for token, n in parsed.items() if given[token] == n}
    out: list[str] = []
    tokens = list(args)
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        i += 1
        if tok == "--":
            break
        if tok in only_paths:
            continue
        name = tok.split("=", 1)[0]
        if not tok.startswith("-") or (name not in drop and not _glued(tok)):
            out.append(tok)
            continue
        takes = drop.get(name, False) if "=" not in tok and not _glued(tok) else False
        if takes or (takes is None and i < len(tokens) and not tokens[i].startswith("-")
                     and tokens[i] not in only_paths):
            i += 1  # its value goes with it
    return out


def _glued(tok: str) -> bool:
    """``-k`` style short options may carry their value glued on: ``-kcounter``."""
    return len(tok) > 2 and tok[1] != "-" and tok[:2] in ("-k", "-m", "-n")


def profile_paths(rootdir: Path, test_file: Path, configured: Sequence[str]) -> list[str]:
    """What the profile is restricted to: ``perfguard_profile_paths`` (each a path from the rootdir, or
    the name of an importable module or package: an installed library), else ``src/`` and the test's
    directory. Raises ProfileError for an entry that is neither."""
    if not configured:
        return [*([str(rootdir / "src")] if (rootdir / "src").is_dir() else []), str(test_file.parent)]
    out: list[str] = []
    for entry in configured:
        path = Path(rootdir, os.path.expanduser(entry))
        found = [str(path)] if path.exists() else _module_paths(entry)
        if not found:
            raise ProfileError(f"perfguard_profile_paths: {entry!r} is neither a path (from the rootdir {rootdir}) "
                               "nor an importable module")
        out += [p for p in found if p not in out]
    return out


def _module_paths(name: str) -> list[str]:
    """The directory of an importable package (each, for a namespace package) or a module's file; [] if none.
    Only a dotted name's parent packages are imported (as ``import`` would)."""
    if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", name):
        return []
    try:
        spec = importlib.util.find_spec(name)
    except Exception:  # a parent package that is missing or fails to import
        return []
    if spec is None:
        return []
    if spec.submodule_search_locations:
        return [str(Path(p)) for p in spec.submodule_search_locations]
    return [spec.origin] if spec.origin and os.path.isfile(spec.origin) else []


def profile_failure(nodeid: str, *, rootdir: Path, outdir: Path, args: list[str], test_file: Path,
                    configured: Sequence[str], timeout: float) -> dict[str, Any]:
    """Profile one test (restricted to ``profile_paths``); a JSON-safe dict with the paths and hot lines,
    or with ``error``."""
    try:
        paths = profile_paths(rootdir, test_file, configured)
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
