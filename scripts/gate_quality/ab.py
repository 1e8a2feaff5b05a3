"""``ab``: the real ``perfguard ab`` on a throw-away repository, with and without a noisy neighbour.

Run from the repository root::

    python scripts/gate_quality ab [--runs 100] [--rounds K] [--out docs/gate_quality.md]

What it does
------------
1. Records ``--runs`` runs of ``perfguard ab BASE --rounds K -- --perf-max-time=T`` (``ab_runs``):
   every test is timed by the plugin itself, every second run has a CPU hog pinned to CPU 0,
   through the whole A/B run (``--hog-on run``, default) or only during the head's pytest runs
   (``--hog-on head``: the adversarial placement, where the neighbour is perfectly confounded with
   the side).
2. Counts, per test, how often the gate says the head failed: for ``aa`` that is a false failure
   (A/A), for the others a detection. The same recording also gives

   * the verdicts with fewer rounds (the first k rounds of each run, pooled by ``ab.pool_runs`` and
     judged again by ``ab.judge``): how the default ``--rounds`` was chosen;
   * the **stored-baseline gate under the same conditions**: round 1 of the base side of a quiet
     run (no hog: a baseline is recorded once, at a chosen moment) as the stored baseline, against
     round 1 of the head side of a run of the group half a recording later (what ``--perf``
     against a committed baseline sees, without its re-measurement), judged by
     ``decide.compare_samples``.

The re-judging calls ``ab.judge`` per test without the run's shared error budget and without
its futility stops: it judges each test's within-run and across-run latency rules, not the
suite-level verdict of ``perfguard ab``.

``--save`` keeps every run's per-round results (JSON lines) so that the analysis can be repeated
with ``--load``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import math
from pathlib import Path
from typing import Any

import numpy as np

from pytest_perfguard import ab as perfguard_ab
from pytest_perfguard.decide import compare_samples
from pytest_perfguard.runs import min_pairs

from . import ab_runs
from .ab_runs import CASES
from .tables import machine, share_of, write_table

NAMES = {"aa": "A/A (no change)", "plus5": "+5 % work", "plus10": "+10 % work", "plus20": "+20 % work"}
BEGIN, END = "<!-- gate_quality_ab:begin -->", "<!-- gate_quality_ab:end -->"


def case_of(nodeid: str) -> str:
    return nodeid.split("[")[-1].rstrip("]")


def ab_verdicts(rec: dict[str, Any], k: int, tolerance: float, across_runs: bool = True) -> dict[str, bool]:
    """case -> the A/B gate failed the head, judging the first ``k`` rounds of one run
    (``across_runs=False``: on the pooled samples alone, without the per-run check)."""
    base = perfguard_ab.pool_runs(ab_runs.side_runs(rec, "base", k))
    head = perfguard_ab.pool_runs(ab_runs.side_runs(rec, "head", k))
    if not across_runs:  # no run bests: the latency verdict falls back to the pooled rounds
        def pooled_only(pools: dict) -> dict:
            return {n: dataclasses.replace(r, measurement=dataclasses.replace(r.measurement, run_bests=[]))
                    if r.measurement is not None else r for n, r in pools.items()}

        base, head = pooled_only(base), pooled_only(head)
    out = {}
    for nodeid, h in head.items():
        verdict = perfguard_ab.judge(nodeid, base.get(nodeid), h, tolerance, "base").verdict
        out[case_of(nodeid)] = verdict in ("regressed", "failed")
    return out


def stored_verdicts(base_rec: dict[str, Any], head_rec: dict[str, Any], tolerance: float) -> dict[str, bool]:
    """case -> regressed, with round 1 of ``base_rec``'s base as the stored baseline."""
    b = next(r for r in base_rec["rounds"] if r["side"] == "base" and r["round"] == 1)["tests"]
    h = next(r for r in head_rec["rounds"] if r["side"] == "head" and r["round"] == 1)["tests"]
    out = {}
    for nodeid in h:
        c = compare_samples(b[nodeid]["measurement"]["samples"], h[nodeid]["measurement"]["samples"],
                            tolerance=tolerance)
        out[case_of(nodeid)] = c.verdict == "regressed"
    return out


def utc(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")


def round_counts(rounds: int) -> list[int]:
    """The round counts reported: 1, 2, 4, 6, ... up to ``rounds``."""
    return sorted({k for k in (1, 2, 4, 6, 8, 12) if k <= rounds} | {rounds})


def analyse(records: list[dict[str, Any]], tolerance: float) -> tuple[list[list[str]], int]:
    rounds = max(r["round"] for r in records[0]["rounds"])
    ks = round_counts(rounds)
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
            cells = [share_of(sum(v[case] for v in by_k[k]), len(by_k[k])) for k in ks]
            cells.append(share_of(sum(v[case] for v in pooled_only), len(pooled_only)))
            where = "head's runs only" if records[0].get("hog_on") == "head" else "whole run"
            rows.append([f"CPU 0, {where}" if hogged else "none", NAMES[case],
                         *cells, share_of(sum(v[case] for v in stored), len(stored))])
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
    ks = round_counts(rounds)
    secs = sorted(r["seconds"] for r in records)
    header = ["CPU hog", "head", *[f"A/B, {k} round{'s' if k > 1 else ''}" for k in ks],
              f"A/B, {rounds}, pooled samples only", "stored baseline, 1 block"]
    out = [
        f"Command: `{cmd}`  ",
        f"Recorded: {utc(records[0]['start'])} to {utc(records[-1]['start'] + records[-1]['seconds'])} (UTC); "
        f"{len(records)} runs of `perfguard ab`, {rounds} rounds each, "
        f"{'the sides in random order' if records[0].get('seed') is not None else 'base first'} in every round, "
        f"`--perf-max-time={records[0].get('max_time', max_time)}`; "
        f"median wall time of one run {secs[len(secs) // 2]:.0f} s  ",
        f"Machine: {machine()}",
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


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python scripts/gate_quality ab", description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=100, help="runs of perfguard ab (half of them with the hog)")
    ap.add_argument("--rounds", type=int, default=perfguard_ab.DEFAULT_ROUNDS, help="rounds per A/B run")
    ap.add_argument("--max-time", type=float, default=0.25, help="--perf-max-time of each pytest run")
    ap.add_argument("--tolerance", type=float, default=0.05)
    ap.add_argument("--hog-on", choices=("run", "head"), default="run",
                    help="the hog runs through whole A/B runs (default) or only during the head's pytest runs")
    ap.add_argument("--save", type=Path, help="append every run's per-round results here (JSON lines)")
    ap.add_argument("--load", type=Path, help="analyse a saved recording instead of measuring")
    ap.add_argument("--out", action="append", type=Path, default=[], help="write the table between the markers")
    return ap


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.load:
        records = ab_runs.load(args.load)
    else:
        records = ab_runs.record(args.runs, args.rounds, args.max_time, args.tolerance, args.save, args.hog_on)
    rows, rounds = analyse(records, args.tolerance)
    cmd = " ".join(["python scripts/gate_quality ab", *argv])
    md = to_markdown(rows, records, rounds, cmd, args.max_time)
    print(md)
    for path in args.out:
        write_table(path, md, BEGIN, END)
    return 0
