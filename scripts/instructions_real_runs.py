"""The instruction gate on this machine, for real: a 20-test suite (pure-Python loops, sorting, numpy,
json; 5 workloads at 4 sizes) saved once with ``pytest --perf --perf-instructions --perf-save``, then
``--runs`` fresh processes unchanged (every second one with a CPU hog on one core, busy 2 s, idle 2 s),
``--runs`` with one test doing 1 % more work and ``--runs`` with it doing 0.5 % more. Each is a real
``pytest --perf-instructions`` process, judged by the plugin itself.

Prints: the largest spread of each test's count over the unchanged runs, how many unchanged runs
failed anywhere (quiet and with the hog), how often the slowed test was caught with no other
failure (95 % Clopper-Pearson intervals), and the seconds per test under callgrind against a plain
``pytest --perf`` run.

    python scripts/instructions_real_runs.py --runs 10
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gate_quality_stored import interval  # the same folder

SUITE = '''
import json, os, random
import numpy as np
import pytest

SLOW = os.environ.get("SLOW_TEST", "")
FACTOR = float(os.environ.get("SLOW_FACTOR", "1"))
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
TARGET = "test_ins.py::test_work[loop-2]"
HOG = "import time\nwhile True:\n    end = time.monotonic() + 2\n    while time.monotonic() < end: pass\n    time.sleep(2)\n"


def pytest_run(project: Path, *args: str, factor: float = 1.0) -> tuple[dict, float]:
    out = project / "out.json"
    out.unlink(missing_ok=True)
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                    "--perf-machine=real", f"--perf-json={out}", *args], cwd=project, capture_output=True,
                   env={**os.environ, "SLOW_TEST": "loop-2", "SLOW_FACTOR": str(factor)})
    return (json.loads(out.read_text()) if out.exists() else {"tests": []}), time.monotonic() - start


def failed(doc: dict) -> set[str]:
    return {t["nodeid"] for t in doc["tests"] if t.get("outcome") == "failed"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        (project / "test_ins.py").write_text(SUITE)
        (project / "hog.py").write_text(HOG)
        _, plain = pytest_run(project, "--perf", "--perf-baselines=none", "--perf-profile=never")
        saved, first = pytest_run(project, "--perf-instructions", "--perf-save")
        tests = len(saved["tests"])
        counts: dict[str, list[float]] = {}
        fails = {False: 0, True: 0}
        walls = [first]
        for i in range(a.runs):
            hog = subprocess.Popen([sys.executable, str(project / "hog.py")]) if i % 2 else None
            try:
                doc, wall = pytest_run(project, "--perf-instructions")
            finally:
                if hog:
                    hog.kill()
                    hog.wait()
            walls.append(wall)
            fails[hog is not None] += bool(failed(doc))
            for t in doc["tests"]:
                counts.setdefault(t["nodeid"], []).append(t["measurement"]["instructions"])
        caught = {}
        for factor in (1.01, 1.005):
            docs = [pytest_run(project, "--perf-instructions", factor=factor)[0] for _ in range(a.runs)]
            caught[factor] = sum(failed(d) == {TARGET} for d in docs)
    spread = {n: max(c) / min(c) - 1 for n, c in counts.items()}
    worst = max(spread, key=spread.get)
    quiet, hogged = (a.runs + 1) // 2, a.runs // 2
    print(f"{tests} tests, saved once, {a.runs} unchanged runs ({hogged} with a CPU hog), {a.runs} runs per slowdown\n")
    print("| what | measured |")
    print("|---|---|")
    print(f"| largest spread of a test's count over the unchanged runs | {100 * spread[worst]:.4f} % ({worst}) |")
    print(f"| median spread over the tests | {100 * sorted(spread.values())[len(spread) // 2]:.4f} % |")
    print(f"| unchanged runs failed anywhere, quiet | {interval(fails[False], quiet)} |")
    print(f"| unchanged runs failed anywhere, CPU hog | {interval(fails[True], hogged)} |")
    for factor, k in caught.items():
        print(f"| one test +{100 * (factor - 1):g} % work: caught alone | {interval(k, a.runs)} |")
    print(f"| seconds per test under callgrind (mean over the runs) | {sum(walls) / len(walls) / tests:.2f} |")
    print(f"| seconds per test, plain `pytest --perf` | {plain / tests:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
