"""The recording of the ``ab`` command: runs of the real ``perfguard ab`` on a throw-away repository.

The repository has two commits. The base commit has four perf tests that all run the same workload
(~0.35 ms per call on the 2-core box, pure Python). The head commit keeps ``aa`` unchanged and makes
``plus5``, ``plus10`` and ``plus20`` do 5 %, 10 % and 20 % more iterations. Each A/B run goes through
``pytest_perfguard.ab.run_ab`` (the code behind the command, unchanged), so every test is measured
by the plugin itself (``perf(fn)``, i.e. ``measure.measure_calls``) in its own pytest process. Every
second run has a **noisy neighbour** (``Hog``): a busy-looping process pinned to CPU 0.

A record is one A/B run, JSON-safe: ``run``, ``hog``, ``hog_on``, ``max_time``, ``start``,
``seconds``, ``seed`` and ``rounds`` (one entry per pytest run: side, round, return code, seconds and
each test's samples, unit, items, memory growth, metrics, budget and whether its body passed).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pytest_perfguard import ab as perfguard_ab
from pytest_perfguard.ab_process import SideRun
from pytest_perfguard.model import TestResult

CASES = {"aa": 0.0, "plus5": 0.05, "plus10": 0.10, "plus20": 0.20}
BASE_UNITS = 200

LIB = '''
UNITS = {units!r}


def work(units):
    acc = 0
    for u in range(units):
        for i in range(40):
            acc += (i * u) % 7
    return acc
'''

TEST = '''
import pytest
import gq
from pytest_perfguard import perf_budget


@perf_budget(latency="1s")
@pytest.mark.parametrize("case", sorted(gq.UNITS))
def test_gate(perf, case):
    perf(gq.work, gq.UNITS[case])
'''


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def make_repo(root: Path) -> str:
    """The two-commit repository; returns the base commit's sha (the head is checked out)."""
    git(root, "init", "-q")
    git(root, "config", "user.email", "gate@example.com")
    git(root, "config", "user.name", "gate quality")
    (root / "src" / "gq").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "pyproject.toml").write_text('[tool.pytest.ini_options]\ntestpaths = ["tests"]\n')
    (root / "tests" / "test_gq.py").write_text(TEST)
    lib = root / "src" / "gq" / "__init__.py"
    lib.write_text(LIB.format(units={c: BASE_UNITS for c in CASES}))
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "base")
    base = git(root, "rev-parse", "HEAD")
    lib.write_text(LIB.format(units={c: int(round(BASE_UNITS * (1 + x))) for c, x in CASES.items()}))
    git(root, "commit", "-q", "-am", "head")
    return base


class Hog:
    """A busy loop pinned to CPU 0, running only while ``on`` (SIGSTOP/SIGCONT)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            os.sched_setaffinity(self.proc.pid, {0})
        except (AttributeError, OSError):
            pass
        self.set(False)

    def set(self, on: bool) -> None:
        os.kill(self.proc.pid, signal.SIGCONT if on else signal.SIGSTOP)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def slim(run: SideRun) -> dict[str, Any]:
    """What the analysis needs of one pytest run (JSON-safe; ``side_runs`` reads it back)."""
    tests = {n: {"measurement": {k: getattr(r.measurement, k) for k in ("samples", "unit", "items", "memory_growth")},
                 "metrics": dict(r.metrics), "budget": dict(r.budget), "body_passed": r.body_passed}
             for n, r in run.results.items() if r.measurement is not None}
    return {"side": run.side, "round": run.round, "returncode": run.returncode, "seconds": run.seconds,
            "tests": tests}


def record(runs: int, rounds: int, max_time: float, tolerance: float, save: Path | None,
           hog_on: str = "run") -> list[dict[str, Any]]:
    """``runs`` A/B runs, every second one with the hog (through the run, or on the head's runs only)."""
    records = []
    with tempfile.TemporaryDirectory(prefix="gate-quality-ab-") as tmp:
        repo = Path(tmp)
        base = make_repo(repo)
        hog = Hog()
        try:
            for i in range(runs):
                hogged = i % 2 == 1

                def on_run(side: str, rnd: int, total: int) -> None:
                    hog.set(hogged and (hog_on == "run" or side == "head"))

                t0 = time.time()
                res = perfguard_ab.run_ab(base, ["tests", f"--perf-max-time={max_time}"], rounds=rounds,
                                          tolerance=tolerance, cwd=repo, say=lambda _: None, on_run=on_run,
                                          lockstep=False)  # the hog disturbs one side's runs
                hog.set(False)
                if res.base_broken or not res.tests:
                    raise SystemExit("perfguard ab measured nothing usable; stopping the recording:\n"
                                     + "\n".join(res.base_broken))
                rec = {"run": i, "hog": hogged, "hog_on": hog_on, "max_time": max_time, "start": t0,
                       "seconds": time.time() - t0, "seed": res.seed, "rounds": [slim(r) for r in res.runs]}
                records.append(rec)
                verdicts = {t.nodeid.split("[")[-1].rstrip("]"): t.verdict for t in res.tests}
                print(f"run {i + 1}/{runs} hog={hogged} {rec['seconds']:.0f} s {verdicts}", file=sys.stderr)
                if save:
                    with save.open("a") as fh:
                        fh.write(json.dumps(rec) + "\n")
        finally:
            hog.close()
    return records


def load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def side_runs(rec: dict[str, Any], side: str, upto: int) -> list[SideRun]:
    """One side's pytest runs of rounds 1 to ``upto`` of an A/B run, as ``perfguard ab`` holds them."""
    return [SideRun(r["side"], r["round"], r["returncode"], r["seconds"], Path(os.devnull),
                                 {n: TestResult.from_json(dict(t, nodeid=n)) for n, t in r["tests"].items()})
            for r in rec["rounds"] if r["side"] == side and r["round"] <= upto]
