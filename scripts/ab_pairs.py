"""How far apart a round's base and head of the same unchanged test lie, from kept ``perfguard ab
--json`` reports (``ab_real_runs.py --keep DIR``): per folder, the 50th / 90th / 99th percentile of
|log(head / base)| over every round of every test but the slowed one, and the share beyond 1.2x. The
run bests are those the gate judged (each run's speed taken out).

    python scripts/ab_pairs.py LOCKSTEP_DIR IN_TURN_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

SLOWED = "loop-2"  # the test ab_real_runs.py slows


def pair_ratios(report: dict) -> list[float]:
    out: list[float] = []
    for test in report["tests"]:
        base, m = test.get("base_run_bests"), test.get("measurement")
        if not base or not m or f"[{SLOWED}]" in test["nodeid"]:
            continue
        b = np.array([x or np.nan for x in base], float)
        h = np.array([x or np.nan for x in m["run_bests"]], float)
        n = min(len(b), len(h))
        r = np.log(h[:n] / b[:n])
        out += list(r[~np.isnan(r)])
    return out


def main(argv: list[str]) -> int:
    for folder in argv:
        files = sorted(Path(folder).glob("*.json"))
        logs = np.abs([r for f in files for r in pair_ratios(json.loads(f.read_text()))])
        q = np.exp(np.quantile(logs, [0.5, 0.9, 0.99]))
        print(f"{folder}: {len(files)} A/B runs, {len(logs)} pairs: head/base apart by {q[0]:.3f}x / {q[1]:.3f}x / "
              f"{q[2]:.3f}x (50th / 90th / 99th percentile), {np.mean(logs > np.log(1.2)):.1%} beyond 1.2x")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
