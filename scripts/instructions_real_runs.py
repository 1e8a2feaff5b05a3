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
    python scripts/instructions_real_runs.py --runs 4 --jobs 2 -k "not numpy"
    python scripts/instructions_real_runs.py --runs 4 --keep counts/   # every run's report kept

``--jobs 2`` runs two counted processes at once (a count does not care; the seconds per test then
include the contention, and every run has the other process beside it, like a hog).
"""

from __future__ import annotations

import argparse
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gate_quality_stored import interval  # the same folder
from stored_real_runs import HOG_SCRIPT, SLOWED, SUITE

def pytest_run(project: Path, *args: str, factor: float = 1.0) -> tuple[dict, float]:
    out = project / f"out-{uuid.uuid4().hex}.json"
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
    ap.add_argument("--jobs", type=int, default=1, help="counted processes at once")
    ap.add_argument("-k", default="", help="pytest -k expression: which of the 20 tests")
    ap.add_argument("--keep", type=Path, help="copy every run's --perf-json report into this folder")
    a = ap.parse_args(argv)
    select = ["-k", a.k] if a.k else []
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        (project / "test_real.py").write_text(SUITE)
        (project / "hog.py").write_text(HOG_SCRIPT)
        _, plain = pytest_run(project, "--perf", "--perf-baselines=none", "--perf-profile=never", *select)
        saved, first = pytest_run(project, "--perf-instructions", "--perf-save", *select)
        tests = len(saved["tests"])

        def unchanged(i: int) -> tuple[dict, float, bool]:
            hog = subprocess.Popen([sys.executable, str(project / "hog.py")]) if i % 2 else None
            try:
                return (*pytest_run(project, "--perf-instructions", *select), hog is not None)
            finally:
                if hog:
                    hog.kill()
                    hog.wait()

        with ThreadPoolExecutor(a.jobs) as pool:
            null = list(pool.map(unchanged, range(a.runs)))
            slowed = {f: list(pool.map(lambda _, f=f: pytest_run(project, "--perf-instructions", *select, factor=f)[0],
                                       range(a.runs))) for f in (1.01, 1.005)}
        counts: dict[str, list[float]] = {}
        fails = {False: 0, True: 0}
        walls = [first]
        for doc, wall, hogged in null:
            walls.append(wall)
            fails[hogged] += bool(failed(doc))
            for t in doc["tests"]:
                counts.setdefault(t["nodeid"], []).append(t["measurement"]["instructions"])
        caught = {f: sum(failed(d) == {SLOWED} for d in docs) for f, docs in slowed.items()}
    spread = {n: max(c) / min(c) - 1 for n, c in counts.items()}
    worst = max(spread, key=spread.get)
    quiet, hogged = (a.runs + 1) // 2, a.runs // 2
    if a.keep:
        a.keep.mkdir(parents=True, exist_ok=True)
        docs = [("save", saved)] + [(f"unchanged-{i}{'-hog' if h else ''}", d) for i, (d, _, h) in enumerate(null)]
        docs += [(f"work-{f:g}-{i}", d) for f, ds in slowed.items() for i, d in enumerate(ds)]
        for name, doc in docs:
            (a.keep / f"{name}.json").write_text(json.dumps(doc))
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
