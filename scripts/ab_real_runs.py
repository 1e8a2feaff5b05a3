"""``perfguard ab`` on this machine, for real: the 20-test suite of ``stored_real_runs.py`` in a
throw-away git repository, ``--runs`` A/B runs with an unchanged head (quiet), ``--runs`` with a CPU hog flapping on one core,
and ``--slowed-runs`` with one test doing 10 % more work (quiet). Prints how many runs failed anywhere, whether the slowed test was caught with
no other failure, the mean rounds, and the mean wall time in units of one plain ``pytest --perf``
run of the same suite.

    python scripts/ab_real_runs.py --runs 10 --slowed-runs 5
    python scripts/ab_real_runs.py --runs 3 --slowed-runs 6 --lockstep
    python scripts/ab_real_runs.py --runs 3 --slowed-runs 0 --lockstep --cpus all
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gate_quality_stored import interval  # the same folder
from stored_real_runs import SUITE, hog

ARGS = ["--perf-max-time=0.3"]


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="unchanged A/B runs, quiet and with a CPU hog each")
    ap.add_argument("--slowed-runs", type=int, default=3, help="A/B runs with one test 10 %% slower")
    ap.add_argument("--lockstep", action="store_true", help="perfguard ab --lockstep (its default): both sides at once, a test's rounds "
                         "alternating; else --no-lockstep, whole runs in turn")
    ap.add_argument("--cpus", help="perfguard ab --cpus: the CPUs both sides run on (e.g. all)")
    ap.add_argument("--keep", type=Path, help="copy each run's --json report into this folder")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        git(root, "init", "-q")
        git(root, "config", "user.email", "t@example.com")
        git(root, "config", "user.name", "t")
        (root / "test_real.py").write_text(SUITE)
        git(root, "add", "-A")
        git(root, "commit", "-qm", "base")
        start = time.monotonic()
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--perf",
                        "--perf-profile=never", "--perf-baselines=none", *ARGS], cwd=root, capture_output=True)
        plain = time.monotonic() - start
        print(f"one plain `pytest --perf` run of the suite: {plain:.1f} s\n")
        print("| head | A/B runs failed anywhere | slowed test caught alone | mean rounds | mean wall (plain runs) |")
        print("|---|---|---|---|---|")
        conditions = (("unchanged (quiet)", "", a.runs), ("unchanged, CPU hog flapping on one core", "", a.runs),
                      ("one test +10 % (quiet)", "loop-2", a.slowed_runs))
        for name, slow, runs in [c for c in conditions if c[2]]:
            text = SUITE.replace('os.environ.get("SLOW_TEST", "")', repr(slow))
            (root / "test_real.py").write_text(text)
            stop = multiprocessing.Event()
            proc = multiprocessing.Process(target=hog, args=(stop,)) if "hog" in name else None
            if proc:
                proc.start()
            fails = caught = 0
            rounds, walls = [], []
            for _ in range(runs):
                start = time.monotonic()
                subprocess.run([sys.executable, "-m", "pytest_perfguard.cli", "ab", "HEAD", "--json", "ab.json",
                                "--lockstep" if a.lockstep else "--no-lockstep", *(["--cpus", a.cpus] if a.cpus else []),
                                "--", *ARGS], cwd=root, capture_output=True, text=True)
                walls.append(time.monotonic() - start)
                doc = json.loads((root / "ab.json").read_text())
                if a.keep:
                    a.keep.mkdir(parents=True, exist_ok=True)
                    kept = a.keep / f"{len(list(a.keep.glob('*.json'))):03d}-{slow or 'unchanged'}.json"
                    kept.write_text(json.dumps(doc))
                failed = {t["nodeid"] for t in doc["tests"] if t["verdict"] in ("regressed", "failed")}
                fails += bool(failed)
                caught += failed == {"test_real.py::test_work[loop-2]"}
                rounds.append(max(r["round"] for r in doc["ab"]["runs"]))
                live = [t["nodeid"].split("[")[-1].rstrip("]") for t in doc["tests"]
                        if not any("stopped after" in r.get("message", "") for r in t.get("rows", []))]
                print(f"  {name}: {rounds[-1]} rounds, {walls[-1]:.0f} s; failed: {sorted(failed) or 'none'}; "
                      f"measured to the end: {', '.join(live) or 'none'}", flush=True)
                for t in doc["tests"]:
                    if slow and t["nodeid"].endswith(f"[{slow}]") and t.get("comparison"):
                        c = t["comparison"].get("runs") or t["comparison"]
                        print(f"    {slow}: ratio {c.get('ratio')}, p slower {c.get('p_slower')}, "
                              f"pairs {c.get('n_pairs')}, confidence {c.get('confidence')}", flush=True)
            if proc:
                stop.set()
                proc.join()
            shown = interval(caught, runs) if slow else "-"
            print(f"| {name} | {interval(fails, runs)} | {shown} | {np.mean(rounds):.1f} | "
                  f"{np.mean(walls) / plain:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
