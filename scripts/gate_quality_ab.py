#!/usr/bin/env python
"""A/B mode of the gate-quality measurement: the real ``perfguard ab`` on a throw-away repository.

Run from the repository root (``python scripts/gate_quality.py --ab ...`` does the same)::

    python scripts/gate_quality_ab.py [--runs 100] [--rounds 4] [--out docs/gate_quality.md]

What it does
------------
1. Makes a throw-away git repository with two commits. The base commit has four perf tests that
   all run the same workload (~0.35 ms per call here, pure Python). The head commit keeps ``aa``
   unchanged and makes ``plus5``, ``plus10`` and ``plus20`` do 5 %, 10 % and 20 % more iterations.
2. Runs ``perfguard ab BASE --rounds K -- --perf-max-time=T`` there ``--runs`` times, through
   ``pytest_perfguard.ab.run_ab`` (the code behind the command, unchanged). Every second run has a
   **noisy neighbour**: a busy-looping process pinned to CPU 0, running through the whole A/B run
   (``--hog-on run``, default), or only during the head's pytest runs (``--hog-on head``: the
   adversarial placement, where the neighbour is perfectly confounded with the side).
3. Counts, per test, how often the gate says the head failed: for ``aa`` that is a false failure
   (A/A), for the others a detection. The same recording also gives
   * the verdicts with fewer rounds (the first k rounds of each run, judged again by
     ``ab.judge``): how the default ``--rounds`` was chosen;
   * the **stored-baseline gate under the same conditions**: round 1 of the base side of a quiet
     run (no hog: a baseline is recorded once, at a chosen moment) as the stored baseline, against
     round 1 of the head side of a run of the group half a recording later (what ``--perf``
     against a committed baseline sees, without its re-measurement).

``--save`` keeps every run's per-round results (JSON lines) so that the analysis can be repeated
with ``--load``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from gate_quality import wilson, write_table  # the same folder: shared table helpers

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pytest_perfguard import ab  # noqa: E402
from pytest_perfguard.decide import compare_samples  # noqa: E402
from pytest_perfguard.runs import min_pairs  # noqa: E402

CASES = {"aa": 0.0, "plus5": 0.05, "plus10": 0.10, "plus20": 0.20}
NAMES = {"aa": "A/A (no change)", "plus5": "+5 % work", "plus10": "+10 % work", "plus20": "+20 % work"}
BASE_UNITS = 200
BEGIN, END = "<!-- gate_quality_ab:begin -->", "<!-- gate_quality_ab:end -->"

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


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def make_repo(root: Path) -> str:
    """The two-commit repository; returns the base commit's sha (the head is checked out)."""
    _git(root, "init", "-q")
    _git(root, "config", "user.email", "gate@example.com")
    _git(root, "config", "user.name", "gate quality")
    (root / "src" / "gq").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "pyproject.toml").write_text('[tool.pytest.ini_options]\ntestpaths = ["tests"]\n')
    (root / "tests" / "test_gq.py").write_text(TEST)
    lib = root / "src" / "gq" / "__init__.py"
    lib.write_text(LIB.format(units={c: BASE_UNITS for c in CASES}))
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "base")
    base = _git(root, "rev-parse", "HEAD")
    lib.write_text(LIB.format(units={c: int(round(BASE_UNITS * (1 + x))) for c, x in CASES.items()}))
    _git(root, "commit", "-q", "-am", "head")
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


def _slim(run: ab.SideRun) -> dict[str, Any]:
    tests = {n: {"measurement": {k: r["measurement"].get(k) for k in ("samples", "unit", "items", "memory_growth")},
                 "metrics": r.get("metrics") or {}, "budget": r.get("budget") or {},
                 "body_passed": r.get("body_passed")}
             for n, r in run.results.items() if r.get("measurement")}
    return {"side": run.side, "round": run.round, "returncode": run.returncode, "seconds": run.seconds,
            "tests": tests}


def record(runs: int, rounds: int, max_time: float, tolerance: float, save: Path | None,
           hog_on: str = "run") -> list[dict[str, Any]]:
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
                res = ab.run_ab(base, ["tests", f"--perf-max-time={max_time}"], rounds=rounds,
                                tolerance=tolerance, cwd=repo, say=lambda _: None, on_run=on_run)
                hog.set(False)
                if res.base_broken or not res.tests:
                    raise SystemExit("perfguard ab measured nothing usable; stopping the recording:\n"
                                     + "\n".join(res.base_broken))
                rec = {"run": i, "hog": hogged, "hog_on": hog_on, "max_time": max_time, "start": t0, "seconds": time.time() - t0,
                       "seed": res.seed,
                       "rounds": [_slim(r) for r in res.runs]}
                records.append(rec)
                verdicts = {t["nodeid"].split("[")[-1].rstrip("]"): t["verdict"] for t in res.tests}
                print(f"run {i + 1}/{runs} hog={hogged} {rec['seconds']:.0f} s {verdicts}", file=sys.stderr)
                if save:
                    with save.open("a") as fh:
                        fh.write(json.dumps(rec) + "\n")
        finally:
            hog.close()
    return records


def _results(rec: dict[str, Any], side: str, upto: int) -> list[ab.SideRun]:
    return [ab.SideRun(r["side"], r["round"], r["returncode"], r["seconds"], Path(os.devnull),
                       {n: dict(t, nodeid=n) for n, t in r["tests"].items()})
            for r in rec["rounds"] if r["side"] == side and r["round"] <= upto]


def ab_verdicts(rec: dict[str, Any], k: int, tolerance: float, across_runs: bool = True) -> dict[str, bool]:
    """case -> the A/B gate failed the head, judging the first ``k`` rounds of one run
    (``across_runs=False``: on the pooled samples alone, without the per-run check)."""
    base, head = ab.pool_runs(_results(rec, "base", k)), ab.pool_runs(_results(rec, "head", k))
    if not across_runs:
        for pooled in (*base.values(), *head.values()):
            (pooled.get("measurement") or {}).pop("run_bests", None)
    out = {}
    for nodeid, h in head.items():
        case = nodeid.split("[")[-1].rstrip("]")
        out[case] = ab.judge(nodeid, base.get(nodeid), h, tolerance, "base")["verdict"] in ("regressed", "failed")
    return out


def stored_verdicts(base_rec: dict[str, Any], head_rec: dict[str, Any], tolerance: float) -> dict[str, bool]:
    """case -> regressed, with round 1 of ``base_rec``'s base as the stored baseline."""
    b = next(r for r in base_rec["rounds"] if r["side"] == "base" and r["round"] == 1)["tests"]
    h = next(r for r in head_rec["rounds"] if r["side"] == "head" and r["round"] == 1)["tests"]
    out = {}
    for nodeid in h:
        case = nodeid.split("[")[-1].rstrip("]")
        c = compare_samples(b[nodeid]["measurement"]["samples"], h[nodeid]["measurement"]["samples"],
                            tolerance=tolerance)
        out[case] = c.verdict == "regressed"
    return out


def _utc(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M")


def rate(k: int, n: int) -> str:
    if n == 0:
        return "n/a"
    lo, hi = wilson(k, n)
    return f"{100 * k / n:.1f} % ({k}/{n}; {100 * lo:.1f}-{100 * hi:.1f})"


def _ks(rounds: int) -> list[int]:
    """The round counts reported: 1, 2, 4, 6, ... up to ``rounds``."""
    return sorted({k for k in (1, 2, 4, 6, 8, 12) if k <= rounds} | {rounds})


def analyse(records: list[dict[str, Any]], tolerance: float) -> tuple[list[list[str]], int]:
    rounds = max(r["round"] for r in records[0]["rounds"])
    ks = _ks(rounds)
    rows = []
    quiet = [r for r in records if not r["hog"]]
    for hogged in (False, True):
        group = [r for r in records if r["hog"] == hogged]
        half = len(group) // 2
        n = min(half, len(quiet) - (half if not hogged else 0))
        stored = [stored_verdicts(quiet[i], group[i + half], tolerance) for i in range(max(0, n))]
        by_k = {k: [ab_verdicts(r, k, tolerance) for r in group] for k in ks}
        pooled_only = [ab_verdicts(r, rounds, tolerance, across_runs=False) for r in group]
        for case in CASES:
            cells = [rate(sum(v[case] for v in by_k[k]), len(by_k[k])) for k in ks]
            cells.append(rate(sum(v[case] for v in pooled_only), len(pooled_only)))
            where = "head's runs only" if records[0].get("hog_on") == "head" else "whole run"
            rows.append([f"CPU 0, {where}" if hogged else "none", NAMES[case],
                         *cells, rate(sum(v[case] for v in stored), len(stored))])
    return rows, rounds


def order_check(records: list[dict[str, Any]], case: str = "aa") -> list[str]:
    """Does something line up with the side, or with the place in the round? Per A/B run, count the
    rounds in which the head's run of ``case`` was slower than the base's, and those in which the
    second run was slower than the first. With no such effect each count is Binomial(rounds, 1/2)
    when the order is random; over-dispersion (a larger variance, more extreme counts) means the
    effect is there. (With the base first in every round, side and place are one count.)"""
    lines = []
    for hogged in (False, True):
        group = [r for r in records if r["hog"] == hogged]
        counts: dict[str, list[int]] = {"head slower": [], "second run slower": []}
        n = 0
        for rec in group:
            runs = [(r["side"], r["round"], min(r["tests"][f"tests/test_gq.py::test_gate[{case}]"]["measurement"]["samples"]))
                    for r in rec["rounds"]]
            by_round: dict[int, list[tuple[str, float]]] = {}
            for side, rnd, best in runs:  # in time order
                by_round.setdefault(rnd, []).append((side, best))
            pairs = [v for v in by_round.values() if len(v) == 2]
            n = len(pairs)
            counts["head slower"].append(sum(dict(p)["head"] > dict(p)["base"] for p in pairs))
            counts["second run slower"].append(sum(second > first for (_, first), (_, second) in pairs))
        if not group or n == 0:
            continue
        lo, hi = n // 6, n - n // 6  # the tails: at most 2 or at least 10 of 12
        expected = len(group) * 2 * sum(math.comb(n, k) for k in range(lo + 1)) / 2**n
        for what, c in counts.items():
            arr = np.array(c)
            lines.append(f"{'CPU 0' if hogged else 'none'} | {what} | {arr.var():.2f} (binomial {n / 4:.2f}) | "
                         f"{int(((arr <= lo) | (arr >= hi)).sum())}/{len(arr)} (binomial {expected:.1f})")
    return lines


def to_markdown(rows: list[list[str]], records: list[dict[str, Any]], rounds: int, cmd: str, max_time: float) -> str:
    ks = _ks(rounds)
    secs = sorted(r["seconds"] for r in records)
    header = ["CPU hog", "head", *[f"A/B, {k} round{'s' if k > 1 else ''}" for k in ks],
              f"A/B, {rounds}, pooled samples only", "stored baseline, 1 block"]
    out = [
        f"Command: `{cmd}`  ",
        f"Recorded: {_utc(records[0]['start'])} to {_utc(records[-1]['start'] + records[-1]['seconds'])} (UTC); "
        f"{len(records)} runs of `perfguard ab`, {rounds} rounds each, "
        f"{'the sides in random order' if records[0].get('seed') is not None else 'base first'} in every round, "
        f"`--perf-max-time={records[0].get('max_time', max_time)}`; "
        f"median wall time of one run {secs[len(secs) // 2]:.0f} s  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} logical cores (shared), Python {platform.python_version()}",
        "",
        "Each cell: share of runs in which the gate failed the head (count; 95 % Wilson interval). "
        "A/A rows are false failures, the others detections. Fewer rounds: the first k rounds "
        f"of the same runs, judged again; from {min_pairs()} rounds on, the latency verdict is taken across "
        "runs (each run's best round is one observation; per side the fastest third of them; a randomization "
        "test over the swaps of the two runs of each round: 99 % CI above 1 and the ratio beyond the 5 % "
        "tolerance; `pytest_perfguard/runs.py`), and the "
        "'pooled samples only' column judges the same runs on their pooled rounds instead. Stored baseline: "
        "round 1 of one run's base against round 1 of the head of a run half the recording later (no re-measurement).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    n = max(r["round"] for r in records[0]["rounds"])
    out += ["", f"Order check (`order_check`), A/A test: per A/B run, in how many of its {n} rounds the head's run "
                f"was the slower one, and the second run of the round the slower one. Variance of those counts across "
                f"A/B runs, and the A/B runs with at most {n // 6} or at least {n - n // 6}, against a fair coin.", "",
            "| CPU hog | count | variance | extreme runs |", "|---|---|---|---|"]
    out += [f"| {line} |" for line in order_check(records)]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=100, help="runs of perfguard ab (half of them with the hog)")
    ap.add_argument("--rounds", type=int, default=ab.DEFAULT_ROUNDS, help="rounds per A/B run")
    ap.add_argument("--max-time", type=float, default=0.25, help="--perf-max-time of each pytest run")
    ap.add_argument("--tolerance", type=float, default=0.05)
    ap.add_argument("--hog-on", choices=("run", "head"), default="run",
                    help="the hog runs through whole A/B runs (default) or only during the head's pytest runs")
    ap.add_argument("--save", type=Path, help="append every run's per-round results here (JSON lines)")
    ap.add_argument("--load", type=Path, help="analyse a saved recording instead of measuring")
    ap.add_argument("--out", action="append", type=Path, default=[], help="write the table between the markers")
    args = ap.parse_args(argv)
    if args.load:
        records = [json.loads(line) for line in args.load.read_text().splitlines() if line.strip()]
    else:
        records = record(args.runs, args.rounds, args.max_time, args.tolerance, args.save, args.hog_on)
    rows, rounds = analyse(records, args.tolerance)
    cmd = "python scripts/gate_quality.py --ab " + " ".join(argv if argv is not None else sys.argv[1:])
    md = to_markdown(rows, records, rounds, cmd.strip(), args.max_time)
    print(md)
    for path in args.out:
        write_table(path, md, BEGIN, END)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
