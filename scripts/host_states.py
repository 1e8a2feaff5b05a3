"""What a guest's clocks see when its host is busy: the CPU time of fixed work, over time, on core 0.

A pure-Python loop (~1 ms) and a C sort (~0.1 ms) alternate on core 0 for ``--seconds`` per
condition, each round timed on the thread's CPU clock (``time.thread_time``), and the host's steal
time (``/proc/stat``) is read per round. The conditions: the other core idle, then busy with a
Python spin, then idle again. A CPU clock leaves out what *this* kernel gives to other threads; it
cannot leave out what the hypervisor gives to other virtual CPUs unless the host reports it as
steal time. Printed per 3 s window: each work's median CPU time in units of its fastest window's,
and the steal that accrued.

Also timed, interleaved, each round of a small reference loop, and each work's CPU time over the
reference's: how much of the host's slowdown a reference run beside the test would take out, for
code like the reference (the loop) and unlike it (the sort). Last, the loop on both cores at once: whether the two virtual CPUs slow
down together.

    python scripts/host_states.py --seconds 30
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import subprocess
import sys
import time

import numpy as np

SPIN = "while True: pass"


def loop(n: int) -> int:
    s = 0
    for i in range(n):
        s += i * i % 7
    return s


def steal() -> int:
    with open("/proc/stat") as f:
        return int(f.readline().split()[8])


def record(seconds: float) -> np.ndarray:
    """Rows of (time, loop CPU s, sort CPU s, reference CPU s, steal jiffies)."""
    data = [random.Random(1).random() for _ in range(20_000)]
    rows = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.thread_time()
        loop(20_000)
        t1 = time.thread_time()
        sorted(data)
        t2 = time.thread_time()
        loop(5_000)
        t3 = time.thread_time()
        rows.append((time.monotonic(), t1 - t0, t2 - t1, t3 - t2, steal()))
    return np.array(rows)


def _record_on(core: int, seconds: float, out: multiprocessing.Queue) -> None:
    os.sched_setaffinity(0, {core})
    out.put(record(seconds))


def both_cores(seconds: float) -> str:
    """The loop measured on both cores at once: do the two virtual CPUs slow down together? (If they
    did, base and head measured side by side, one per core, would see the same host.)"""
    out: multiprocessing.Queue = multiprocessing.Queue()
    other = multiprocessing.Process(target=_record_on, args=(1, seconds, out))
    other.start()
    mine = record(seconds)
    theirs = out.get()
    other.join()
    start = max(mine[0, 0], theirs[0, 0])
    pairs = []
    for w in np.arange(start, start + seconds - 1.5, 1.5):
        a = mine[(mine[:, 0] >= w) & (mine[:, 0] < w + 1.5), 1]
        b = theirs[(theirs[:, 0] >= w) & (theirs[:, 0] < w + 1.5), 1]
        if len(a) and len(b):
            pairs.append((np.median(a), np.median(b)))
    x = np.array(pairs)
    x = x / x.min(axis=0)
    ratio = x[:, 0] / x[:, 1]
    return (f"both cores at once, {len(x)} windows of 1.5 s: core 0's loop ranged over {x[:, 0].max():.2f}x, core 1's "
            f"over {x[:, 1].max():.2f}x, correlation {np.corrcoef(x[:, 0], x[:, 1])[0, 1]:+.2f}, core 0 over core 1 "
            f"ranged over {ratio.max() / ratio.min():.2f}x")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="per condition")
    a = ap.parse_args(argv)
    os.sched_setaffinity(0, {0})
    parts = []
    for name in ("other core idle", "other core busy", "other core idle"):
        spin = subprocess.Popen(["taskset", "-c", "1", sys.executable, "-c", SPIN]) if "busy" in name else None
        try:
            parts.append((name, record(a.seconds)))
        finally:
            if spin is not None:
                spin.kill()
    windows = []
    for name, rows in parts:
        t = rows[:, 0] - rows[0, 0]
        for start in np.arange(0, a.seconds, 3.0):
            w = rows[(t >= start) & (t < start + 3)]
            if len(w):
                windows.append((name, start, np.median(w[:, 1]), np.median(w[:, 2]), w[:, 1].sum() / w[:, 3].sum(),
                                w[:, 2].sum() / w[:, 3].sum(), w[-1, 4] - w[0, 4]))
    fast_loop = min(w[2] for w in windows)
    fast_sort = min(w[3] for w in windows)
    print(f"fastest 3 s window: loop {fast_loop * 1e3:.3f} ms, sort {fast_sort * 1e3:.3f} ms (CPU time, median round)")
    print("| condition | window | loop CPU time | sort CPU time | loop / reference | sort / reference | steal (jiffies) |")
    print("|---|---|---|---|---|---|---|")
    for name, start, lp, st, lr, sr, stolen in windows:
        print(f"| {name} | {start:.0f}-{start + 3:.0f} s | {lp / fast_loop:.2f}x | {st / fast_sort:.2f}x | {lr:.3f} | {sr:.3f} "
              f"| {stolen:.0f} |")
    for i, what in ((2, "loop"), (3, "sort"), (4, "loop / reference"), (5, "sort / reference")):
        x = np.array([w[i] for w in windows])
        print(f"{what}: windows range {x.max() / x.min():.2f}x (max over min)")
    print(f"windows whose loop ran above 1.2x its fastest: {sum(w[2] > 1.2 * fast_loop for w in windows)} of {len(windows)}")
    print(both_cores(a.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
