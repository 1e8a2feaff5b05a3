"""The instruction gate's limits on the reference suites, measured: each suite file is run once with
``pytest --perf`` (timed) and ``--runs`` times with ``pytest --perf-instructions`` (counted under
callgrind), each a fresh process. Prints per measured test: the count per call or item, its spread
over the runs, whether its repeated counts within a run agreed, and per file the wall time under
callgrind over the timed run's.

    python scripts/instructions_suites.py --runs 2 --timeout 600
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FILES = ("test_augment.py", "test_counter.py", "test_batched_eval.py", "test_lprnet.py", "test_serving.py")
ROOT = Path(__file__).resolve().parent.parent


def run(path: str, out: Path, *args: str, timeout: float) -> tuple[dict | None, float]:
    start = time.monotonic()
    try:
        subprocess.run([sys.executable, "-m", "pytest", f"suites/{path}", "-q", "-p", "no:cacheprovider",
                        "--perf-baselines=none", "--perf-profile=never", f"--perf-json={out}", *args], cwd=ROOT,
                       capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, time.monotonic() - start
    return (json.loads(out.read_text()) if out.exists() else None), time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=600, help="seconds per pytest process")
    ap.add_argument("--files", default=",".join(FILES))
    a = ap.parse_args(argv)
    print("| suite file | test | instructions | spread over runs | repeats agreed | wall under callgrind / timed |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for path in a.files.split(","):
            out = Path(tmp) / "out.json"
            _, timed = run(path, out, "--perf", timeout=a.timeout)
            docs, walls = [], []
            for _ in range(a.runs):
                out.unlink(missing_ok=True)
                doc, wall = run(path, out, "--perf-instructions", timeout=a.timeout)
                walls.append(wall)
                if doc is not None:
                    docs.append(doc)
            if not docs:
                print(f"| {path} | (all) | not counted: over {a.timeout:.0f} s under callgrind | | | > "
                      f"{a.timeout / timed:.0f}x |", flush=True)
                continue
            slowdown = f"{sum(walls) / len(walls) / timed:.0f}x ({sum(walls) / len(walls):.0f} s / {timed:.0f} s)"
            counted = {}
            for doc in docs:
                for t in doc["tests"]:
                    m = t.get("measurement") or {}
                    if m.get("instructions") is not None:
                        counted.setdefault(t["nodeid"].split("::")[-1], []).append(
                            (m["instructions"], m["unit"], all(r["verdict"] != "error" for r in t["rows"]
                                                                if r["metric"] == "instructions")))
            for name, got in counted.items():
                values = [v for v, _, _ in got]
                spread = f"{100 * (max(values) / min(values) - 1):.4f} %" if len(values) > 1 else "one run"
                agreed = "yes" if all(ok for _, _, ok in got) else "no"
                print(f"| {path} | {name} | {values[0]:,.0f} per {got[0][1]} | {spread} | {agreed} | {slowdown} |",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
