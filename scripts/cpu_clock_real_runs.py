"""The CPU-time gate beside the wall-clock gate, on the same real runs of a CPU-bound suite.

The loop and sorting tests of ``stored_real_runs.py`` (8 pure-Python tests, 4 sizes each) are run
``--saves`` times to make the baseline, then ``--runs`` times unchanged and ``--runs`` times with one
test doing 10 % more work. Every process is a real ``pytest --perf --perf-json`` run pinned to core 0
(``taskset``), and during every second gated run a CPU hog runs on that same core (busy 2 s, idle 2 s),
as a neighbour on a shared VM does. Each run's JSON holds both clocks' rounds; both gates judge the
same runs through the real decision functions, as the runner does (``gate_quality_stored.judge_run``:
``model.BaselineEntry.from_result`` builds the baseline with the clock set, ``gate.baseline_rows`` judges),
without the runner's confirmation (it would re-measure, which a recorded run cannot).

Prints, per clock: unchanged runs failed anywhere, and the slowed test caught with no other failure
(95 % Clopper-Pearson intervals), quiet and under the hog; the median smallest change the latency rows
could flag (MDE) and the slowed test's own; which tests failed. Then what moved the levels: the
hog's share (wall over CPU time) and the test's own speed (CPU time over its fastest in any run).

    python scripts/cpu_clock_real_runs.py --saves 5 --runs 20
    python scripts/cpu_clock_real_runs.py --saves 5 --runs 16 --keep runs.json   # the measured runs kept
    python scripts/cpu_clock_real_runs.py --load runs.json                       # judged again, not measured
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import numpy as np

from gate_quality_stored import interval, judge_run  # the same folder
from stored_real_runs import HOG_SCRIPT, SLOWED, SUITE
from pytest_perfguard.model import BaselineEntry, TestResult

def run(project: Path, slow: str = "") -> list[dict]:
    """One pinned pytest process; its tests' results in the order they ran."""
    out = project / "out.json"
    out.unlink(missing_ok=True)
    subprocess.run(["taskset", "-c", "0", sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
                    "no:randomly", "--perf", "--perf-baselines=none", "--perf-profile=never", "--perf-max-time=0.3",
                    f"--perf-json={out}", "-k", "loop or sort and not numpy"], cwd=project, capture_output=True,
                   env={**os.environ, "SLOW_TEST": slow})
    tests = json.loads(out.read_text())["tests"]
    process = uuid.uuid4().hex[:12]  # one process: its tests share its speed
    for t in tests:
        t["process"] = process
    return tests


def on_clock(results: list[dict], clock: str) -> list[dict]:
    """The results as the runner would have made them under ``--perf-clock=clock``, rows reset."""
    out = copy.deepcopy(results)
    for r in out:
        r["measurement"]["clock"] = clock
        r["rows"] = []
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--saves", type=int, default=5)
    ap.add_argument("--runs", type=int, default=20, help="gated runs per head (unchanged, one test +10 %%)")
    ap.add_argument("--alpha", type=float, default=0.01)
    ap.add_argument("--tolerance", type=float, default=0.05)
    ap.add_argument("--keep", type=Path, help="write the measured runs (saves and gated) to this JSON file")
    ap.add_argument("--load", type=Path, help="judge the runs of a --keep file instead of measuring")
    a = ap.parse_args(argv)
    if a.load:
        kept = json.loads(a.load.read_text())
        saves, gated = kept["saves"], {(slow, hog): runs for slow, hog, runs in kept["gated"]}
    else:
        saves, gated = measure(a.saves, a.runs)
    if a.keep:
        a.keep.write_text(json.dumps({"saves": saves, "gated": [[s, h, r] for (s, h), r in gated.items()]}))
    print(f"{len(saves[0])} tests, {len(saves)} saved runs, alpha {a.alpha:g}, tolerance {a.tolerance:g}; "
          "pytest pinned to core 0, the hog on the same core\n")
    print("| clock | hog | unchanged: runs failed anywhere | one test +10 %: caught alone | median MDE | slowed test's "
          "MDE | failed (unchanged; +10 %) |")
    print("|---|---|---|---|---|---|---|")
    for clock in ("wall", "cpu"):
        entries: dict[str, BaselineEntry] = {}
        for results in saves:
            for res in on_clock(results, clock):
                entries[res["nodeid"]] = BaselineEntry.from_result(TestResult.from_json(res), None,
                                                                   entries.get(res["nodeid"]))
        for hog in (False, True):
            null = [judge_run(entries, on_clock(r, clock), a.alpha, a.tolerance) for r in gated.get(("", hog), [])]
            alt = [judge_run(entries, on_clock(r, clock), a.alpha, a.tolerance, mde_of=SLOWED)
                   for r in gated.get(("loop-2", hog), [])]
            mde, slowed = (float(np.median([m for _, ms in runs for m in ms] or [np.nan])) for runs in (null, alt))
            which = [collections.Counter(n.split("[")[-1].rstrip("]") for f, _ in runs for n in f) for runs in (null, alt)]
            print(f"| {clock} | {'on' if hog else 'off'} | {interval(sum(bool(f) for f, _ in null), len(null))} | "
                  f"{interval(sum(f == {SLOWED} for f, _ in alt), len(alt))} | +{mde:.1%} | +{slowed:.1%} | "
                  f"{'; '.join(', '.join(f'{n} {k}x' for n, k in w.most_common()) or 'none' for w in which)} |",
                  flush=True)
    print()
    for line in what_moved(saves, gated):
        print(line)
    return 0


def what_moved(saves: list[list[dict]], gated: dict[tuple[str, bool], list[list[dict]]]) -> list[str]:
    """What each clock's levels (10th percentile of the rounds) did: the hog's share (wall over CPU, per
    test measurement, hog off and on) and the rest (CPU level over the same test's fastest CPU level in any
    run: a test's own speed moving with nothing changed). The slowed test's slowed runs are left out."""
    def level(t: dict, key: str) -> float:
        return float(np.quantile(t["measurement"][key], 0.1))

    runs = [("saves", list(r)) for r in saves] + [
        (f"hog {'on' if hog else 'off'}", [t for t in r if not (slow and t["nodeid"].endswith(SLOWED))])
        for (slow, hog), rs in gated.items() for r in rs]
    fastest: dict[str, float] = {}
    for _, r in runs:
        for t in r:
            fastest[t["nodeid"]] = min(fastest.get(t["nodeid"], np.inf), level(t, "cpu_samples"))
    lines = []
    for name in ("saves", "hog off", "hog on"):
        ts = [t for n, r in runs if n == name for t in r]
        if not ts:
            continue
        wall = np.array([level(t, "samples") / level(t, "cpu_samples") for t in ts])
        cpu = np.array([level(t, "cpu_samples") / fastest[t["nodeid"]] for t in ts])
        lines.append(f"{name}: {len(ts)} test measurements; wall over CPU: median {np.median(wall):.3f}, 90th percentile "
                     f"{np.quantile(wall, 0.9):.3f}, max {wall.max():.2f}; CPU over the test's fastest: median "
                     f"{np.median(cpu):.3f}, above 1.2x {np.mean(cpu > 1.2):.0%}, max {cpu.max():.2f}")
    return lines


def measure(n_saves: int, n_runs: int) -> tuple[list[list[dict]], dict[tuple[str, bool], list[list[dict]]]]:
    """The saved runs, and the gated runs by (slowed test, hog on)."""
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        (project / "test_real.py").write_text(SUITE)
        (project / "hog.py").write_text(HOG_SCRIPT)
        saves = [run(project) for _ in range(n_saves)]
        gated: dict[tuple[str, bool], list[list[dict]]] = {}
        for i in range(2 * n_runs):
            slow, hog = ("loop-2" if i >= n_runs else ""), i % n_runs % 2 == 1  # each head: hog off, on, off, ...
            proc = subprocess.Popen(["taskset", "-c", "0", sys.executable, str(project / "hog.py")]) if hog else None
            try:
                gated.setdefault((slow, hog), []).append(run(project, slow))
            finally:
                if proc:
                    proc.kill()
                    proc.wait()
    return saves, gated


if __name__ == "__main__":
    sys.exit(main())
