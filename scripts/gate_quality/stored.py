"""``stored``: how good the within-run regression rule (``pytest_perfguard.decide``) is on REAL timings.

Run from the repository root::

    python scripts/gate_quality stored [--pairs N] [--out docs/gate_quality.md]

What it does
------------
1. Measures, on this machine, a reference workload (``workload``: pure Python + small numpy work,
   ~1.5 ms per call) through the plugin's own loop, ``pytest_perfguard.measure.measure_calls`` with
   the plugin's default ``Settings`` (1 warm-up call, calls per round calibrated so that a round
   lasts >= 10 ms, GC off during a round, at least 20 rounds and 1 s of rounds): the samples a perf
   test's ``perf(fn)`` produces. ``--rounds``, ``--max-time`` and ``--round-ms`` change those
   settings (the plugin's ``--perf-min-rounds``, ``--perf-max-time``, ``--perf-min-round-time``).
2. Repeats a *session* ``--pairs`` times back to back (default 100 sessions, ~9 minutes). A
   session measures, in a random order, five workloads one after the other: the base workload
   twice (``A`` and ``A'``) and three variants that really do 5 %, 10 % and 20 % more work
   (more iterations of the same inner unit; the true ratio is measured and reported).
3. Forms baseline/candidate pairs from those measurements and applies to each pair
   ``decide.compare_samples`` (default rule, and ``statistic="median"``) and pytest-benchmark's
   rule ``--benchmark-compare-fail=mean:10%`` (fail if candidate mean > baseline mean * 1.10):

   * **stored baseline, 1 block**: ``A`` of a session in the first half of the run against the
     candidate of a session in the second half (minutes later), like a baseline saved earlier;
   * **stored baseline, 4 passes**: the same number of rounds, but taken as 4 passes of a quarter
     of the rounds (the first quarter of each measurement), passes at least 5 sessions apart, on
     both sides;
   * **same runner, back to back**: ``A`` of a session against the candidate of the same session
     (seconds apart: an A/B with one alternation);
   * **same runner, 4 alternations**: base and head from the same 4 sessions (at least 5 sessions
     apart), a quarter of the rounds each (an A/B alternating base, head, base, head, ... in one
     process).
   The table's scenario names give the median time between consecutive passes of those pairs.

   For A/A pairs (the candidate is the base workload: ``A`` of another session, or ``A'`` of the
   same session) every "regressed" verdict is a false failure.

These are within-run rules judged one test at a time: not the suite-level gate (several saved runs,
each process's speed taken out, one error budget per run; README, "How reliable is the gate").

Confirm on regression (``--confirm``, or automatically for a ``--confirm-blocks`` recording): see
``confirm``. ``--save-samples`` / ``--load-samples`` keep the raw timings in an ``.npz`` file so that
the analysis can be repeated (or a decision rule tried) without measuring again. Decision rules
must be tuned on a different recording (different ``--seed``, different moment) than the one
reported.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from pytest_perfguard import decide
from pytest_perfguard.measure import Settings

from . import recording
from .confirm import analyse_confirm, confirm_markdown
from .recording import valid
from .tables import machine, share, write_table
from .workload import INDEX

BEGIN, END = "<!-- gate_quality:begin -->", "<!-- gate_quality:end -->"
CANDIDATES = ("A", "s05", "s10", "s20")
LABEL = {"A": "A/A (no change)", "s05": "+5 % work", "s10": "+10 % work", "s20": "+20 % work"}

SPACING = 5  # least sessions between two passes of one side (~27 s at the default settings)
SCENARIOS = {  # name: (passes per side, base and head measured in the same sessions?)
    "stored": (1, False),
    "stored4": (4, False),
    "adjacent": (1, True),
    "ab4": (4, True),
}
SCENARIO_NAMES = {  # {apart}: median seconds between consecutive passes of the scenario's pairs (``passes_apart``)
    "stored": "stored baseline, 1 block of rounds",
    "stored4": "stored baseline, same rounds in 4 passes a median {apart} s apart",
    "adjacent": "same runner, back to back, 1 block",
    "ab4": "same runner, 4 alternations a median {apart} s apart",
}


def pb_fails(base: np.ndarray, head: np.ndarray, pct: float = 0.10) -> bool:
    """pytest-benchmark ``--benchmark-compare-fail=mean:10%``."""
    return float(np.mean(head)) > float(np.mean(base)) * (1 + pct)


RULES = {
    "ours": lambda b, h, tol: decide.compare_samples(b, h, tolerance=tol).verdict == "regressed",
    "median": lambda b, h, tol: decide.compare_samples(b, h, tolerance=tol, statistic="median").verdict
    == "regressed",
    "pb": lambda b, h, tol: pb_fails(b, h),
}


def spread(rng: np.random.Generator, lo: int, hi: int, passes: int) -> tuple[int, ...]:
    """Sorted session indices in [lo, hi), consecutive ones at least SPACING apart."""
    slack = (hi - lo) - (passes - 1) * SPACING  # choose offsets, then add the spacing back
    if slack < passes:
        raise SystemExit(f"too few sessions for {passes} passes: use --pairs >= {2 * passes * SPACING}")
    offs = np.sort(rng.choice(slack, size=passes, replace=False))
    return tuple(int(lo + o + k * SPACING) for k, o in enumerate(offs))


def make_pairs(n_sessions: int, n_pairs: int, seed: int) -> dict[str, list]:
    """Per scenario, (base sessions, head sessions) pairs; deterministic for a seed.

    A stored baseline comes from the first half of the run and its candidate from the second half
    (minutes later); same-runner pairs take base and head from the same sessions.
    """
    rng = np.random.default_rng(seed + 1)
    half = n_sessions // 2
    out: dict[str, list] = {}
    for name, (passes, same) in SCENARIOS.items():
        if name == "adjacent":
            out[name] = [((j,), (j,)) for j in range(n_sessions)]
        elif same:
            out[name] = [(s, s) for s in (spread(rng, 0, n_sessions, passes) for _ in range(n_pairs))]
        else:
            out[name] = [(spread(rng, 0, half, passes), spread(rng, half, n_sessions, passes))
                         for _ in range(n_pairs)]
    return out


def sides(data: np.ndarray, scenario: str, pair: tuple, cand: str) -> tuple[np.ndarray, np.ndarray]:
    """Base and head samples of a pair: with P passes, the first 1/P of each pass's rounds, pooled."""
    passes, same = SCENARIOS[scenario]
    c = INDEX["A2" if (cand == "A" and same) else cand]  # A/A: A' of the same session, else A

    def part(s: int, v: int) -> np.ndarray:
        x = valid(data[s, v])
        return x[: len(x) // passes]

    base = np.concatenate([part(s, INDEX["A"]) for s in pair[0]])
    head = np.concatenate([part(s, c) for s in pair[1]])
    return base, head


def true_ratios(data: np.ndarray) -> dict[str, tuple[float, float]]:
    """Per candidate: the median over sessions of its within-session ratio to ``A``, medians / best rounds."""
    out = {}
    a = INDEX["A"]
    for cand in CANDIDATES:
        c = INDEX["A2" if cand == "A" else cand]
        r = np.nanmedian(data[:, c], axis=1) / np.nanmedian(data[:, a], axis=1)
        rmin = np.nanmin(data[:, c], axis=1) / np.nanmin(data[:, a], axis=1)
        out[cand] = (float(np.median(r)), float(np.median(rmin)))
    return out


def analyse(rec: dict[str, Any], n_pairs: int, tolerance: float) -> list[dict[str, Any]]:
    data = rec["samples"]
    pairs = make_pairs(data.shape[0], n_pairs, int(rec["seed"]))
    rows = []
    for scen, plist in pairs.items():
        for cand in CANDIDATES:
            row: dict[str, Any] = {"scenario": scen, "cand": cand, "n": len(plist), **{k: 0 for k in RULES},
                                   "apart": passes_apart(rec["stamps"], plist)}
            ratios = []
            for p in plist:
                b, h = sides(data, scen, p, cand)
                ratios.append(np.median(h) / np.median(b))
                for name, rule in RULES.items():
                    row[name] += bool(rule(b, h, tolerance))
            r = np.array(ratios)
            row.update(ratio_p5=float(np.percentile(r, 5)), ratio_p50=float(np.median(r)),
                       ratio_p95=float(np.percentile(r, 95)))
            rows.append(row)
    return rows


def passes_apart(stamps: np.ndarray, pairs: list) -> float:
    """Median seconds between the starts of consecutive passes of one side, over ``pairs``."""
    starts = np.nanmin(stamps.reshape(stamps.shape[0], -1), axis=1)
    gaps = [starts[b] - starts[a] for pair in pairs for side in pair for a, b in zip(side[:-1], side[1:])]
    return float(np.median(gaps)) if gaps else float("nan")


def contention_line(data: np.ndarray) -> str:
    """How often whole measurements were disturbed (relative to the best measurement of a workload)."""
    used = ~np.all(np.isnan(data), axis=2)
    best = np.nanmin(data, axis=2) / np.nanmin(data, axis=(0, 2))[None, :]
    med = np.nanmedian(data, axis=2) / np.nanmin(np.nanmedian(data, axis=2), axis=0)[None, :]
    best, med = best[used], med[used]
    return (f"Disturbance: {100 * np.mean(med > 1.25):.0f} % of the {best.size} measurements had a "
            f"median > 1.25x the lowest median of that workload; {100 * np.mean(best > 1.05):.1f} % "
            "had even their best round > 1.05x the fastest round of that workload (every round "
            "disturbed).")


def to_markdown(rows: list[dict[str, Any]], true_ratio: dict[str, tuple[float, float]], rec: dict[str, Any],
                tolerance: float, cmd: str, elapsed: float, loaded: bool = False) -> str:
    shape = rec["samples"].shape
    out = [
        f"Command: `{cmd}`  ",
        (f"Date: {rec['date']} (UTC, the recording's); this analysis of its saved samples took {elapsed / 60:.1f} min  "
         if loaded else f"Date: {rec['date']} (UTC); recording + analysis took {elapsed / 60:.1f} min  "),
        f"Machine: {machine()}, numpy {np.__version__}; {shape[0]} sessions x {shape[1]} "
        f"measurements; seed {int(rec['seed'])}  ",
        recording.timing_line(rec) + "  ",
        "True ratios of the injected slowdowns (median over sessions of the within-session ratio, "
        "medians / best rounds): "
        + "; ".join(f"{LABEL[c]}: {m:.3f} / {b:.3f}" for c, (m, b) in true_ratio.items()) + "  ",
        contention_line(rec["samples"]),
        "",
        f"Columns: **perfguard** = `decide.compare_samples(base, head, tolerance={tolerance})` says "
        "`regressed` (default rule: exact precedence test on the fastest 5 % of rounds, 99 %); "
        "**median rule** = the same with `statistic=\"median\"` (99 % interval of the ratio of medians, "
        "from an effective sample size, beyond the tolerance); "
        "**pytest-benchmark** = `--benchmark-compare-fail=mean:10%` (head mean > base mean x 1.10). "
        "Each cell: share of pairs flagged (count; 95 % Wilson interval). A/A rows: false failures; "
        "other rows: detections. Ratio column: head median / base median over the pairs (p5 / p50 / p95).",
        "",
        "| scenario | candidate | pairs | median ratio p5 / p50 / p95 | perfguard | median rule "
        "| pytest-benchmark mean:10% |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        name = SCENARIO_NAMES[r["scenario"]].format(apart=f"{r['apart']:.0f}")
        out.append(
            f"| {name} | {LABEL[r['cand']]} | {r['n']} | "
            f"{r['ratio_p5']:.2f} / {r['ratio_p50']:.2f} / {r['ratio_p95']:.2f} | "
            f"{share(r['ours'], r['n'])} | {share(r['median'], r['n'])} | {share(r['pb'], r['n'])} |"
        )
    return "\n".join(out) + "\n"


def parser() -> argparse.ArgumentParser:
    d = Settings()
    ap = argparse.ArgumentParser(prog="python scripts/gate_quality stored", description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=100,
                    help="sessions to record = pairs per scenario (default 100, ~5.5 s each)")
    ap.add_argument("--rounds", type=int, default=d.min_rounds,
                    help=f"least rounds per measurement, the plugin's --perf-min-rounds (default {d.min_rounds}); "
                    "rounds go on until --max-time as well")
    ap.add_argument("--max-time", type=float, default=d.max_time,
                    help=f"seconds of rounds per measurement, the plugin's --perf-max-time (default {d.max_time:g})")
    ap.add_argument("--round-ms", type=float, default=d.min_round_time * 1e3,
                    help="minimum round duration in ms, the plugin's --perf-min-round-time "
                    f"(default {d.min_round_time * 1e3:g})")
    ap.add_argument("--tolerance", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=20260)
    ap.add_argument("--out", type=Path, help="also write the markdown table to this file, between its markers")
    ap.add_argument("--save-samples", type=Path, help="save the raw timings (.npz)")
    ap.add_argument("--load-samples", type=Path, help="analyse saved timings instead of measuring")
    ap.add_argument("--confirm", action="store_true",
                    help="analyse confirm-on-regression strategies (stored baseline) instead")
    ap.add_argument("--confirm-blocks", type=int, default=0,
                    help="record each workload this many times back to back (confirm-on-regression "
                    "recording; only the confirm analysis is run on it)")
    return ap


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    t0 = time.time()
    if args.load_samples:
        rec = recording.load(args.load_samples)
    else:
        timing = recording.settings(args.rounds, args.max_time, args.round_ms / 1e3)
        print(f"recording {args.pairs} sessions with {timing} ...", file=sys.stderr)
        if args.confirm_blocks:
            rec = recording.record_blocks(args.pairs, timing, args.seed, args.confirm_blocks)
        else:
            rec = recording.record(args.pairs, timing, args.seed)
        if args.save_samples:
            recording.save(rec, args.save_samples)
    cmd = " ".join(["python scripts/gate_quality stored", *argv])
    if args.confirm or rec["samples"].ndim == 4:
        md = confirm_markdown(analyse_confirm(rec, 100, args.tolerance), rec, args.tolerance, cmd,
                              recording.timing_line(rec))
        print(md)
        return 0
    rows = analyse(rec, args.pairs, args.tolerance)
    md = to_markdown(rows, true_ratios(rec["samples"]), rec, args.tolerance, cmd, time.time() - t0,
                     loaded=bool(args.load_samples))
    print(md)
    if args.out:
        write_table(args.out, md, BEGIN, END)
    return 0
