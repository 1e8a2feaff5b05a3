"""Stored mode on this machine, for real: a 20-test suite saved ``--saves`` times, then gated
``--runs`` times quiet, ``--runs`` times with a CPU hog flapping on one core (2 s on, 2 s off), and
``--runs`` times with one test made 10 % slower (quiet). Each run is a fresh ``pytest --perf``
process, as in CI. Prints how many runs failed anywhere (with a 95 % Clopper-Pearson interval),
whether the slowed test was caught with no other failure, the median MDE the rows printed, and how
many suspected regressions the confirmation measured again and passed.

    python scripts/stored_real_runs.py --saves 5 --runs 15
    python scripts/stored_real_runs.py --saves 5 --runs 12 --conditions quiet
    python scripts/stored_real_runs.py --saves 5 --runs 30 --keep reports/   # every run's report kept

Under each condition's row it prints which tests failed, and how often.
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gate_quality_stored import interval  # the same folder

SUITE = '''
import json, math, os, random
import numpy as np
import pytest

SLOW = os.environ.get("SLOW_TEST", "")
FACTOR = float(os.environ.get("SLOW_FACTOR", "1.10"))
ARR = np.random.default_rng(0).random(20_000)
WORDS = [str(i) * 3 for i in range(2_000)]

def loop(n):
    s = 0
    for i in range(n):
        s += i * i % 7
    return s

WORK = {
    "loop": lambda k: loop(int(20_000 * k)),
    "sort": lambda k: sorted(random.Random(1).random() for _ in range(int(8_000 * k))),
    "numpy_sum": lambda k: [ARR.sum() for _ in range(int(60 * k))],
    "numpy_sort": lambda k: [np.sort(ARR) for _ in range(int(3 * k))],
    "json": lambda k: [json.loads(json.dumps(WORDS)) for _ in range(int(4 * k))],
}

@pytest.mark.parametrize("size", [1, 2, 3, 4])
@pytest.mark.parametrize("kind", sorted(WORK))
def test_work(perf, kind, size):
    k = size * (FACTOR if SLOW == f"{kind}-{size}" else 1.0)
    perf(WORK[kind], k)
'''
SLOWED = "test_real.py::test_work[loop-2]"  # the test SLOW_TEST=loop-2 makes do SLOW_FACTOR times the work
# a CPU hog as a script, for processes pinned with taskset: busy 2 s, idle 2 s
HOG_SCRIPT = "import time\nwhile True:\n    end = time.monotonic() + 2\n    while time.monotonic() < end: pass\n    time.sleep(2)\n"


def hog(stop) -> None:  # noqa: ANN001
    while not stop.is_set():
        end = time.monotonic() + 2
        while time.monotonic() < end and not stop.is_set():
            pass
        stop.wait(2)


def pytest_run(project: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict, float]:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--perf",
                           "--perf-machine=real", "--perf-profile=never", "--perf-max-time=0.3",
                           "--perf-json=out.json", *args], cwd=project, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    doc = json.loads((project / "out.json").read_text()) if (project / "out.json").exists() else {}
    return proc.returncode, doc, time.monotonic() - start


def failed_tests(doc: dict) -> set[str]:
    return {t["nodeid"] for t in doc.get("tests", []) if t.get("outcome") == "failed"}


def rescued(doc: dict) -> int:
    """Tests measured again to confirm a suspected regression, and passed."""
    return sum(t.get("outcome") == "passed" and (t.get("measurement") or {}).get("remeasured", 0) > 0
               for t in doc.get("tests", []))


def mdes(doc: dict) -> list[float]:
    return [r["mde"] for t in doc.get("tests", []) for r in t["rows"]
            if r["metric"] == "latency vs baseline" and r.get("mde") is not None]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--saves", type=int, default=5)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--conditions", default="quiet,hog,slowed", help="which of quiet, hog, slowed to run")
    ap.add_argument("--keep", type=Path, help="copy each gated run's --perf-json report into this folder")
    a = ap.parse_args(argv)
    names = {"quiet": "quiet", "hog": "CPU hog flapping on one core", "slowed": "one test +10 % (quiet)"}
    conditions = [names[c] for c in a.conditions.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        (project / "test_real.py").write_text(SUITE)
        for _ in range(a.saves):
            pytest_run(project, "--perf-save")
        print(f"saved {a.saves} runs; each gated run below is one pytest process\n")
        print("| condition | runs failed anywhere | slowed test caught alone | median MDE | suspected, passed on "
              "confirmation | mean wall s |")
        print("|---|---|---|---|---|---|")
        for name in conditions:
            stop = multiprocessing.Event()
            proc = multiprocessing.Process(target=hog, args=(stop,)) if "hog" in name else None
            if proc:
                proc.start()
            fails, caught, m, walls, saved, which = 0, 0, [], [], 0, collections.Counter()
            target = "test_real.py::test_work[loop-2]"
            for _ in range(a.runs):
                env = {"SLOW_TEST": "loop-2"} if "+10" in name else None
                _, doc, wall = pytest_run(project, env=env)
                failed = failed_tests(doc)
                which.update(failed)
                if a.keep:
                    a.keep.mkdir(parents=True, exist_ok=True)
                    (a.keep / f"{len(list(a.keep.glob('*.json'))):03d}-{conditions.index(name)}.json").write_text(
                        json.dumps(doc))
                fails += bool(failed)
                caught += failed == {target}
                m += mdes(doc)
                saved += rescued(doc)
                walls.append(wall)
            if proc:
                stop.set()
                proc.join()
            shown = interval(caught, a.runs) if "+10" in name else "-"
            print(f"| {name} | {interval(fails, a.runs)} | {shown} | +{100 * float(np.median(m)):.0f} % | {saved} | "
                  f"{float(np.mean(walls)):.1f} |", flush=True)
            tally = ", ".join(f"{n.split('[')[-1].rstrip(']')} {k}x" for n, k in which.most_common())
            print(f"  failed: {tally or 'none'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
