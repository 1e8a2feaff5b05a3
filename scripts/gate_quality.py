#!/usr/bin/env python
"""Measure how good the regression gate (``pytest_perfguard.decide``) is on REAL timings.

Run from the repository root::

    python scripts/gate_quality.py [--pairs N] [--out docs/gate_quality.md]
    python scripts/gate_quality.py --ab [--runs N] [--rounds K] [--out ...]   (see gate_quality_ab.py)

What it does
------------
1. Measures, on this machine, a reference workload (pure Python + small numpy work, ~1.5 ms per
   call) the way a perf test is measured: warm-up, calibration of the calls per round so that a
   round lasts >= 10 ms, GC disabled during a round, ``--rounds`` rounds (~1 s) per measurement.
2. Repeats a *session* ``--pairs`` times back to back (default 100 sessions, ~8 minutes). A
   session measures, in a random order, five workloads one after the other: the base workload
   twice (``A`` and ``A'``) and three variants that really do 5 %, 10 % and 20 % more work
   (more iterations of the same inner unit; the true ratio is measured and reported).
3. Forms baseline/candidate pairs from those measurements and applies to each pair
   ``decide.compare_samples`` (default rule, and ``statistic="median"``) and pytest-benchmark's
   rule ``--benchmark-compare-fail=mean:10%`` (fail if candidate mean > baseline mean * 1.10):

   * **stored baseline, 1 block**: ``A`` of a session in the first half of the run against the
     candidate of a session in the second half (minutes later), like a baseline saved earlier;
   * **stored baseline, 4 passes**: the same number of rounds, but taken as 4 passes of a quarter
     of the rounds, passes ~20 s apart (5 sessions), on both sides;
   * **same runner, back to back**: ``A`` of a session against the candidate of the same session
     (seconds apart: ``perfguard ab`` with one alternation);
   * **same runner, 4 alternations**: base and head from the same 4 sessions ~20 s apart, a
     quarter of the rounds each (``perfguard ab`` alternating base, head, base, head, ...).

   For A/A pairs (the candidate is the base workload: ``A`` of another session, or ``A'`` of the
   same session) every "regressed" verdict is a false failure.

Confirm on regression (``--confirm``, or automatically for a ``--confirm-blocks`` recording):
stored baseline of 1 block against a head that, when its first block is judged "regressed", is
re-measured once or twice and decided again (pooled blocks, or the second block alone). In a
normal recording the re-measurement is the same workload in the next session(s) (~4.5 s later);
``--confirm-blocks 3`` records every workload 3 times back to back (``A'`` skipped), which is what
the plugin does. See docs/gate_quality.md.

Only ``pytest_perfguard.decide`` is imported from the plugin: the round loop is written here.
``--save-samples`` / ``--load-samples`` keep the raw timings in an ``.npz`` file so that the
analysis can be repeated (or a decision rule tried) without measuring again. Decision rules must
be tuned on a different recording (different ``--seed``, different moment) than the one reported.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import gc
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pytest_perfguard import decide  # noqa: E402

VARIANTS = ("A", "A2", "s05", "s10", "s20")
EXTRA = {"A": 0.0, "A2": 0.0, "s05": 0.05, "s10": 0.10, "s20": 0.20}
BASE_UNITS = 250  # inner units per call for the base workload (~6 us each)

# --------------------------------------------------------------------------- the workload
_VEC = np.linspace(0.0, 1.0, 16)
_MAT = np.arange(16.0).reshape(4, 4) / 16.0


def _unit(k: int) -> float:
    """One unit of mixed work: a small pure-Python loop, a dict and a few tiny numpy ops."""
    acc = 0
    d: dict[int, int] = {}
    for i in range(24):
        acc += (i * k) % 7
        d[i & 7] = acc
    v = _VEC * (k % 5) + 1.0
    m = _MAT @ _MAT[k % 4]
    return acc + float(v.sum()) + float(m[0]) + len(d)


def make_workload(units: int):
    def workload() -> float:
        total = 0.0
        for k in range(units):
            total += _unit(k)
        return total

    return workload


WORKLOADS = {name: make_workload(int(round(BASE_UNITS * (1 + extra)))) for name, extra in EXTRA.items()}


# --------------------------------------------------------------------------- the round loop
def measure(fn, rounds: int, round_s: float) -> np.ndarray:
    """Per-call latencies (s) of ``rounds`` rounds, each calibrated to last >= ``round_s``."""
    for _ in range(3):  # warm-up
        fn()
    t0 = time.perf_counter()
    fn()
    per_call = max(time.perf_counter() - t0, 1e-7)
    loops = max(1, math.ceil(round_s / per_call))
    while True:  # calibration: grow loops until one round really lasts >= round_s
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        elapsed = time.perf_counter() - t0
        if elapsed >= round_s:
            break
        loops = max(loops + 1, math.ceil(loops * round_s / max(elapsed, 1e-9) * 1.05))
    out = np.empty(rounds)
    gc_was_enabled = gc.isenabled()
    clock = time.perf_counter
    try:
        for r in range(rounds):
            gc.disable()
            t0 = clock()
            for _ in range(loops):
                fn()
            out[r] = (clock() - t0) / loops
            if gc_was_enabled:
                gc.enable()
    finally:
        if gc_was_enabled:
            gc.enable()
    return out


def record(sessions: int, rounds: int, round_s: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    samples = np.empty((sessions, len(VARIANTS), rounds))
    stamps = np.empty((sessions, len(VARIANTS)))
    t_start = time.time()
    for s in range(sessions):
        for v in rng.permutation(len(VARIANTS)):
            stamps[s, v] = time.time() - t_start
            samples[s, v] = measure(WORKLOADS[VARIANTS[v]], rounds, round_s)
        if s % 10 == 9 or s == sessions - 1:
            print(f"  session {s + 1}/{sessions} done, {time.time() - t_start:.0f} s", file=sys.stderr)
    return {"samples": samples, "stamps": stamps, "variants": np.array(VARIANTS), "seed": seed,
            "rounds": rounds, "round_s": round_s,
            "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}


def record_blocks(sessions: int, rounds: int, round_s: float, seed: int, blocks: int) -> dict:
    """Like :func:`record`, but every workload is measured ``blocks`` times back to back (the
    re-measurements a confirm-on-regression gate would take) and ``A'`` is skipped.
    ``samples`` has shape (sessions, variants, blocks, rounds); ``A2`` stays in ``variants``
    with NaN samples so that indices match :data:`VARIANTS`."""
    rng = np.random.default_rng(seed)
    samples = np.full((sessions, len(VARIANTS), blocks, rounds), np.nan)
    stamps = np.full((sessions, len(VARIANTS), blocks), np.nan)
    used = [k for k, v in enumerate(VARIANTS) if v != "A2"]
    t_start = time.time()
    for s in range(sessions):
        for v in rng.permutation(used):
            for b in range(blocks):
                stamps[s, v, b] = time.time() - t_start
                samples[s, v, b] = measure(WORKLOADS[VARIANTS[v]], rounds, round_s)
        if s % 5 == 4 or s == sessions - 1:
            print(f"  session {s + 1}/{sessions} done, {time.time() - t_start:.0f} s", file=sys.stderr)
    return {"samples": samples, "stamps": stamps, "variants": np.array(VARIANTS), "seed": seed,
            "rounds": rounds, "round_s": round_s, "blocks": blocks,
            "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}


# --------------------------------------------------------------------------- the analysis
def pb_fails(base: np.ndarray, head: np.ndarray, pct: float = 0.10) -> bool:
    """pytest-benchmark ``--benchmark-compare-fail=mean:10%``."""
    return float(np.mean(head)) > float(np.mean(base)) * (1 + pct)


def wilson(k: int, n: int) -> tuple[float, float]:
    if n == 0:
        return (math.nan, math.nan)
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return ci.low, ci.high


SPACING = 5  # sessions between two passes of one side (~20 s at the default settings)
SCENARIOS = {  # name: (passes per side, base and head measured in the same sessions?)
    "stored": (1, False),
    "stored4": (4, False),
    "adjacent": (1, True),
    "ab4": (4, True),
}
SCENARIO_NAMES = {
    "stored": "stored baseline, 1 block of rounds",
    "stored4": "stored baseline, same rounds in 4 passes ~20 s apart",
    "adjacent": "same runner, back to back, 1 block",
    "ab4": "same runner, 4 alternations ~20 s apart",
}


def _spread(rng: np.random.Generator, lo: int, hi: int, passes: int) -> tuple[int, ...]:
    """Sorted session indices in [lo, hi), consecutive ones at least SPACING apart."""
    slack = (hi - lo) - (passes - 1) * SPACING  # choose offsets, then add the spacing back
    if slack <= 0:
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
            out[name] = [(s, s) for s in (_spread(rng, 0, n_sessions, passes) for _ in range(n_pairs))]
        else:
            out[name] = [(_spread(rng, 0, half, passes), _spread(rng, half, n_sessions, passes))
                         for _ in range(n_pairs)]
    return out


_IDX = {v: k for k, v in enumerate(VARIANTS)}


def sides(data: np.ndarray, scenario: str, pair: tuple, cand: str) -> tuple[np.ndarray, np.ndarray]:
    """Base and head samples of a pair: the first rounds/passes rounds of each pass, pooled."""
    passes, same = SCENARIOS[scenario]
    length = data.shape[2] // passes
    c = _IDX["A2" if (cand == "A" and same) else cand]  # A/A: A' of the same session, else A
    base = np.concatenate([data[s, _IDX["A"], :length] for s in pair[0]])
    head = np.concatenate([data[s, c, :length] for s in pair[1]])
    return base, head


RULES = {
    "ours": lambda b, h, tol: decide.compare_samples(b, h, tolerance=tol).verdict == "regressed",
    "median": lambda b, h, tol: decide.compare_samples(b, h, tolerance=tol, statistic="median").verdict
    == "regressed",
    "pb": lambda b, h, tol: pb_fails(b, h),
}


def analyse(rec: dict, n_pairs: int, tolerance: float) -> tuple[list[dict], dict]:
    data = rec["samples"]
    pairs = make_pairs(data.shape[0], n_pairs, int(rec["seed"]))
    true_ratio = {}
    for cand in ("A", "s05", "s10", "s20"):
        c = _IDX["A2" if cand == "A" else cand]
        r = np.median(data[:, c], axis=1) / np.median(data[:, _IDX["A"]], axis=1)
        rmin = np.min(data[:, c], axis=1) / np.min(data[:, _IDX["A"]], axis=1)
        true_ratio[cand] = (float(np.median(r)), float(np.median(rmin)))
    rows = []
    for scen, plist in pairs.items():
        for cand in ("A", "s05", "s10", "s20"):
            row = {"scenario": scen, "cand": cand, "n": len(plist), **{k: 0 for k in RULES}}
            ratios = []
            for p in plist:
                b, h = sides(data, scen, p, cand)
                ratios.append(np.median(h) / np.median(b))
                for name, rule in RULES.items():
                    row[name] += bool(rule(b, h, tolerance))
            ratios = np.array(ratios)
            row.update(ratio_p5=float(np.percentile(ratios, 5)), ratio_p50=float(np.median(ratios)),
                       ratio_p95=float(np.percentile(ratios, 95)))
            rows.append(row)
    return rows, true_ratio


# --------------------------------------------------------------------------- confirm on regression
CONFIRM = {  # name: description (stored baseline = 1 block; head = 1st block + re-measurements)
    "one": "1 block, no confirmation",
    "pooled": "(a) confirm once, pooled: regressed on block 1 and on blocks 1+2",
    "and": "(b) confirm once, AND: regressed on block 1 and on block 2 alone",
    "pooled2": "(c) confirm twice, pooled: regressed on 1, 1+2 and 1+2+3",
}


def head_blocks(data: np.ndarray, j: int, cand: str, blocks: int) -> list[np.ndarray]:
    """The first ``blocks`` measurements of workload ``cand`` from session ``j`` on.

    4-d recordings (``--confirm-blocks``): the back-to-back blocks of session j. 3-d recordings:
    the measurement of that workload in sessions j, j+1, ... (one session apart)."""
    c = _IDX[cand]
    if data.ndim == 4:
        return [data[j, c, k] for k in range(blocks)]
    return [data[j + k, c] for k in range(blocks)]


def confirm_verdicts(base: np.ndarray, hb: list[np.ndarray], tol: float) -> dict[str, bool]:
    def reg(h):
        return decide.compare_samples(base, h, tolerance=tol).verdict == "regressed"

    v1 = reg(hb[0])
    out = {"one": v1, "pooled": False, "and": False, "pooled2": False, "ran2": False}
    if v1:
        p12 = reg(np.concatenate(hb[:2]))
        out.update(pooled=p12, ran2=p12, **{"and": reg(hb[1])})
        if p12:
            out["pooled2"] = reg(np.concatenate(hb[:3]))
    return out


def confirm_pairs(data: np.ndarray, seed: int, n_pairs: int) -> tuple[list, list]:
    """(100 random pairs, all pairs): base session in the first half, head session in the second
    half (leaving room for two more sessions in a 3-d recording)."""
    n = data.shape[0]
    half = n // 2
    last = n if data.ndim == 4 else n - 2
    allp = [(i, j) for i in range(half) for j in range(half, last)]
    rng = np.random.default_rng(seed + 2)
    pick = rng.choice(len(allp), size=min(n_pairs, len(allp)), replace=False)
    return [allp[k] for k in sorted(pick)], allp


def analyse_confirm(rec: dict, n_pairs: int, tolerance: float) -> dict:
    data = rec["samples"]
    pairs, allp = confirm_pairs(data, int(rec["seed"]), n_pairs)
    sel = set(pairs)
    res = {}
    for cand in ("A", "s05", "s10", "s20"):
        cnt = {k: [0, 0] for k in (*CONFIRM, "ran2")}  # [in the 100 pairs, in all pairs]
        for i, j in allp:
            base = data[i, _IDX["A"], 0] if data.ndim == 4 else data[i, _IDX["A"]]
            v = confirm_verdicts(base, head_blocks(data, j, cand, 3), tolerance)
            for k, x in v.items():
                cnt[k][1] += x
                if (i, j) in sel:
                    cnt[k][0] += x
        res[cand] = cnt
    return {"res": res, "n": len(pairs), "n_all": len(allp)}


def gaps_line(rec: dict) -> str:
    st = rec["stamps"]
    if st.ndim == 3:
        g = np.diff(st, axis=2)[:, [k for k, v in enumerate(VARIANTS) if v != "A2"]]
        what = "back-to-back blocks of one session"
    else:
        g = np.diff(st, axis=0)
        what = "the same workload in consecutive sessions"
    return (f"Start-to-start gap between consecutive measurements ({what}): median "
            f"{np.median(g):.1f} s (p5 {np.percentile(g, 5):.1f}, p95 {np.percentile(g, 95):.1f} s).")


def confirm_markdown(out: dict, rec: dict, tolerance: float, cmd: str) -> str:
    shape = rec["samples"].shape
    res, n, na = out["res"], out["n"], out["n_all"]
    lines = [
        f"Command: `{cmd}`  ",
        f"Recording: {rec['date']} (UTC), seed {int(rec['seed'])}, samples {shape}  ",
        gaps_line(rec) + "  ",
        f"Rule: `decide.compare_samples(base, head, tolerance={tolerance})` says `regressed`; "
        f"stored baseline = 1 block (`A` of a first-half session), head from a second-half "
        f"session. Cells: share failed in {n} random pairs (count; 95 % Wilson interval) "
        f"[share over all {na} base x head combinations]. Extra blocks: mean re-measurements "
        "per A/A test (the confirmation cost when nothing changed).",
        "",
        "| strategy | A/A false failures | +5 % caught | +10 % caught | +20 % caught "
        "| extra blocks per A/A test |",
        "|---|---|---|---|---|---|",
    ]
    for k, desc in CONFIRM.items():
        cells = [f"{fmt_rate(res[c][k][0], n)} [{100 * res[c][k][1] / na:.1f} %]"
                 for c in ("A", "s05", "s10", "s20")]
        a = res["A"]
        extra = {"one": 0, "pooled": a["one"][1], "and": a["one"][1],
                 "pooled2": a["one"][1] + a["ran2"][1]}[k] / na
        lines.append(f"| {desc} | " + " | ".join(cells) + f" | {extra:.3f} |")
    return "\n".join(lines) + "\n"


def fmt_rate(k: int, n: int) -> str:
    lo, hi = wilson(k, n)
    return f"{100 * k / n:.1f} % ({k}; {100 * lo:.1f}-{100 * hi:.1f})"


def contention_line(data: np.ndarray) -> str:
    """How often whole measurements were disturbed (relative to the best measurement of a workload)."""
    best = data.min(axis=2) / data.min(axis=(0, 2))[None, :]
    med = np.median(data, axis=2) / np.median(data, axis=2).min(axis=0)[None, :]
    return (f"Disturbance: {100 * np.mean(med > 1.25):.0f} % of the {best.size} measurements had a "
            f"median > 1.25x the lowest median of that workload; {100 * np.mean(best > 1.05):.1f} % "
            "had even their best round > 1.05x the fastest round of that workload (every round "
            "disturbed).")


def to_markdown(rows: list[dict], true_ratio: dict, rec: dict, tolerance: float, cmd: str,
                elapsed: float) -> str:
    label = {"A": "A/A (no change)", "s05": "+5 % work", "s10": "+10 % work", "s20": "+20 % work"}
    shape = rec["samples"].shape
    out = [
        f"Command: `{cmd}`  ",
        f"Date: {rec['date']} (UTC); recording + analysis took {elapsed / 60:.1f} min  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} logical cores (shared), Python "
        f"{platform.python_version()}, numpy {np.__version__}; {shape[0]} sessions x {shape[1]} "
        f"measurements x {shape[2]} rounds of >= {rec['round_s'] * 1e3:.0f} ms; seed {int(rec['seed'])}  ",
        "True ratios of the injected slowdowns (median over sessions of the within-session ratio, "
        "medians / best rounds): "
        + "; ".join(f"{label[c]}: {m:.3f} / {b:.3f}" for c, (m, b) in true_ratio.items()) + "  ",
        contention_line(rec["samples"]),
        "",
        f"Columns: **perfguard** = `decide.compare_samples(base, head, tolerance={tolerance})` says "
        "`regressed` (default rule); **median rule** = the same with `statistic=\"median\"` "
        "(99 % CI of the ratio of medians beyond the tolerance and Mann-Whitney p < 0.01); "
        "**pytest-benchmark** = `--benchmark-compare-fail=mean:10%` (head mean > base mean x 1.10). "
        "Each cell: share of pairs flagged (count; 95 % Wilson interval). A/A rows: false failures; "
        "other rows: detections. Ratio column: head median / base median over the pairs (p5 / p50 / p95).",
        "",
        "| scenario | candidate | pairs | median ratio p5 / p50 / p95 | perfguard | median rule "
        "| pytest-benchmark mean:10% |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {SCENARIO_NAMES[r['scenario']]} | {label[r['cand']]} | {r['n']} | "
            f"{r['ratio_p5']:.2f} / {r['ratio_p50']:.2f} / {r['ratio_p95']:.2f} | "
            f"{fmt_rate(r['ours'], r['n'])} | {fmt_rate(r['median'], r['n'])} | {fmt_rate(r['pb'], r['n'])} |"
        )
    return "\n".join(out) + "\n"


BEGIN, END = "<!-- gate_quality:begin -->", "<!-- gate_quality:end -->"


def write_table(path: Path, md: str, begin: str = BEGIN, end: str = END) -> None:
    """Put ``md`` between the markers: in an existing file only that part changes (the block is
    appended when the file has no markers yet)."""
    old = path.read_text() if path.exists() else ""
    block = f"{begin}\n{md}{end}"
    if begin in old and end in old:
        new = old[: old.index(begin)] + block + old[old.index(end) + len(end):]
    else:
        new = (old.rstrip("\n") + "\n\n" if old else "") + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--ab" in argv:  # the A/B mode: the real `perfguard ab` on a throw-away repository
        argv.remove("--ab")
        import gate_quality_ab

        return gate_quality_ab.main(argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=100,
                    help="sessions to record = pairs per scenario (default 100, ~5 s each)")
    ap.add_argument("--rounds", type=int, default=75, help="rounds per measurement (default 75, ~1 s)")
    ap.add_argument("--round-ms", type=float, default=10.0, help="minimum round duration in ms")
    ap.add_argument("--tolerance", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=20260)
    ap.add_argument("--out", type=Path, help="also write the markdown table to this file")
    ap.add_argument("--save-samples", type=Path, help="save the raw timings (.npz)")
    ap.add_argument("--load-samples", type=Path, help="analyse saved timings instead of measuring")
    ap.add_argument("--confirm", action="store_true",
                    help="analyse confirm-on-regression strategies (stored baseline) instead")
    ap.add_argument("--confirm-blocks", type=int, default=0,
                    help="record each workload this many times back to back (confirm-on-regression "
                    "recording; only the confirm analysis is run on it)")
    args = ap.parse_args(argv)
    t0 = time.time()
    if args.load_samples:
        with np.load(args.load_samples) as z:
            rec = {k: z[k] for k in z.files}
        rec["date"] = str(rec["date"])
        rec["round_s"] = float(rec["round_s"])
    else:
        print(f"recording {args.pairs} sessions ...", file=sys.stderr)
        if args.confirm_blocks:
            rec = record_blocks(args.pairs, args.rounds, args.round_ms / 1e3, args.seed,
                                args.confirm_blocks)
        else:
            rec = record(args.pairs, args.rounds, args.round_ms / 1e3, args.seed)
        if args.save_samples:
            np.savez_compressed(args.save_samples, **rec)
    cmd = "python scripts/gate_quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.confirm or rec["samples"].ndim == 4:
        md = confirm_markdown(analyse_confirm(rec, 100, args.tolerance), rec, args.tolerance,
                              cmd.strip())
        print(md)
        return 0
    rows, true_ratio = analyse(rec, args.pairs, args.tolerance)
    md = to_markdown(rows, true_ratio, rec, args.tolerance, cmd.strip(), time.time() - t0)
    print(md)
    if args.out:
        write_table(args.out, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
