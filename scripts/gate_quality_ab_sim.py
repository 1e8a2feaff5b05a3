"""``perfguard ab``'s sequential decision at suite scale, by simulation through the real functions.

Each simulated A/B run measures ``--tests`` tests for up to ``--max-rounds`` rounds, one base and
one head process per round. Every process has its own speed (log-normal, SD ``sigma``: the 5-15 %
run-to-run offset of a shared VM), every test a per-run jitter (SD drawn per test from 0.5-5 %),
and with probability 0.05 a test's whole run is disturbed (1.2-1.6x slower). ``--host P`` adds the
host's states measured on a shared VM (``host_states.py``): with probability P a test's
measurement runs 1.2-2.75x slower, drawn for each side apart, or with ``--lockstep`` once for a
round's base and head of the test (``perfguard ab --lockstep`` alternates their rounds, so both
see the same state, and the same disturbance; per-process speeds and jitter stay each side's
own). As ``perfguard ab``
does (``ab._look``, ``ab._deselected``, ``ab._decide``), through the same functions: from
round ``--futility-from`` on, ``runs.look`` stops the tests whose rounds rule out a slowdown
beyond the tolerance, and at the rounds of ``runs.efficacy_looks`` those significantly slower
beyond it, on the run bests with each run's speed taken out (``runs.without_run_speeds``), and
says when the runs end; later runs skip the stopped tests but for those ``runs.deselected``
keeps for the runs' speed; ``runs.compare_runs`` judges the rest at ``runs.final_share``, and the
runs' speed, at the shares ``runs.shares`` gives.

Reported: how often an unchanged suite fails anywhere, how often a +10 % slowdown of one test is
caught with no other test failing (95 % Clopper-Pearson intervals), and the mean cost in
test-measurements per test, in units of one plain run of the suite (a plain run measures each test
once; a fixed 12 rounds cost 24).

    python scripts/gate_quality_ab_sim.py --suites 400
    python scripts/gate_quality_ab_sim.py --suites 200 --sigmas 0.10 --host 0.3 --lockstep
"""

from __future__ import annotations

import argparse
import math
import sys
from fractions import Fraction
from itertools import product

import numpy as np

from gate_quality_stored import host_state, interval  # the same folder: the Clopper-Pearson interval
from pytest_perfguard.runs import (EFFICACY_LOOKS, EFFICACY_SHARE, compare_runs, deselected, efficacy_looks, final_share,
                                   look, shares, without_run_speeds)


def host_states(rng, n_tests, host):
    """Per test, the host's slowdown during its measurement (``gate_quality_stored.host_state``)."""
    return np.array([host_state(rng, host) for _ in range(n_tests)])


def disturbances(rng, n_tests):
    """Per test, a disturbance of its whole measurement: 1.2-1.6x with probability 0.05."""
    return np.where(rng.random(n_tests) < 0.05, rng.uniform(1.2, 1.6, n_tests), 1.0)


def one_ab(rng, n_tests, sigma, max_rounds, futility_from, tolerance, alpha, slow=None, host=0.0, lockstep=False,
           efficacy=(EFFICACY_SHARE, EFFICACY_LOOKS)):
    """(failed tests, cost in plain runs, rounds run); test -1 is the runs' speed. ``host``: the share
    of measurements the host slows 1.2-2.75x (``host_states``); ``lockstep``: a round's base and head
    of a test see the same host state and disturbance (their rounds alternate), else each its own;
    ``efficacy``: the part of a test's share its efficacy looks spend, and how many looks at most."""
    jitter = rng.uniform(0.005, 0.05, n_tests)
    bests: dict[int, tuple[list, list]] = {t: ([], []) for t in range(n_tests)}
    test_share, speed_share = shares(alpha, n_tests, True)
    looks = efficacy_looks(test_share, max_rounds, *efficacy)
    measured, stopped = 0, {}
    for rnd in range(1, max_rounds + 1):
        skip = set(deselected(sorted(stopped), n_tests - len(stopped)))
        shared = host_states(rng, n_tests, host) if host else None
        burst = disturbances(rng, n_tests) if lockstep else None  # else drawn per side below, as before
        for side in (0, 1):
            state = shared if lockstep or shared is None else host_states(rng, n_tests, host)
            speed = math.exp(rng.normal(0, sigma))
            for t in range(n_tests):
                if t in skip:
                    bests[t][side].append(None)
                    continue
                v = speed * math.exp(rng.normal(0, jitter[t]))
                v *= slow[1] if side == 1 and slow and slow[0] == t else 1.0
                if burst is not None:
                    v *= burst[t]
                else:
                    v *= rng.uniform(1.2, 1.6) if rng.random() < 0.05 else 1.0
                v *= state[t] if state is not None else 1.0
                bests[t][side].append(v)
            measured += n_tests - len(skip)
        corrected, speeds = without_run_speeds(bests)
        if futility_from <= rnd < max_rounds:
            new, go_on = look(corrected, speeds, stopped, tolerance=tolerance, speed_share=speed_share,
                              efficacy=looks.get(rnd, 0.0))
            stopped.update({t: c.verdict for t, c in new.items()})
            if not go_on:
                break
    last = final_share(test_share, max_rounds, *efficacy)
    failed = {t for t, (b, h) in corrected.items() if stopped.get(t) == "regressed" or t not in stopped and compare_runs(
        b, h, tolerance=tolerance, confidence=1 - 2 * last, interval=False).verdict in ("regressed", "insufficient")}
    if compare_runs(*speeds, tolerance=tolerance, confidence=1 - 2 * speed_share,
                    interval=False).verdict in ("regressed", "insufficient"):
        failed.add(-1)
    return failed, measured / n_tests, rnd


def model_pairs(rng, n: int = 200_000) -> int:
    """|log(head / base)| of an unchanged test's pair in one round, before the runs' speeds are taken
    out: each side's jitter (0.5-5 % SD), and the 1.2-1.6x disturbances each side's own or shared."""
    jitter = rng.uniform(0.005, 0.05, n)
    apart = rng.normal(0, jitter) - rng.normal(0, jitter)
    own = apart + np.log(disturbances(rng, n)) - np.log(disturbances(rng, n))
    for name, d in (("disturbances each side's own", own), ("disturbances shared (lockstep)", apart)):
        q = np.exp(np.quantile(np.abs(d), [0.5, 0.9, 0.99]))
        print(f"{name}: {q[0]:.3f}x / {q[1]:.3f}x / {q[2]:.3f}x (50th / 90th / 99th percentile), "
              f"{np.mean(np.abs(d) > np.log(1.2)):.1%} beyond 1.2x")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--suites", type=int, default=400)
    ap.add_argument("--tests", type=int, default=20)
    ap.add_argument("--alpha", type=float, default=0.01)
    ap.add_argument("--tolerance", type=float, default=0.05)
    ap.add_argument("--sigmas", default="0.05,0.10")
    ap.add_argument("--max-rounds", default="20")
    ap.add_argument("--futility-from", default="3")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--host", type=float, default=0.0, help="share of measurements the host slows 1.2-2.75x")
    ap.add_argument("--lockstep", action="store_true", help="a test's base and head share the host's state")
    ap.add_argument("--efficacy", default=f"{Fraction(EFFICACY_SHARE).limit_denominator(100)}:{EFFICACY_LOOKS}",
                    help="PART:LOOKS,...: the part of a test's share its efficacy looks spend, and how many looks "
                         "at most (0:0: none), one table row each (default: perfguard ab's)")
    ap.add_argument("--pairs", action="store_true", help="print how far apart a round's base and head of an unchanged "
                                                        "test lie in the model, and stop")
    a = ap.parse_args(argv)
    if a.pairs:
        return model_pairs(np.random.default_rng(a.seed))
    print(f"{a.tests} tests, alpha {a.alpha:g}, tolerance {a.tolerance:g}, {a.suites} A/B runs per cell, host "
          f"states {a.host:g}{' (lockstep)' if a.lockstep else ''}\n")
    print("| run SD | max rounds | futility from | efficacy looks | unchanged suite fails | +10 % caught alone | "
          "mean cost (plain runs), unchanged | mean cost, +10 % |")
    print("|---|---|---|---|---|---|---|---|")
    splits = [(float(Fraction(p)), int(n)) for p, n in (e.split(":") for e in a.efficacy.split(","))]
    for sigma, max_rounds, start, split in product([float(s) for s in a.sigmas.split(",")],
                                                   [int(r) for r in a.max_rounds.split(",")],
                                                   [int(f) for f in a.futility_from.split(",")], splits):
        rng = np.random.default_rng(a.seed)
        args = (a.tests, sigma, max_rounds, start, a.tolerance, a.alpha)
        kw = {"host": a.host, "lockstep": a.lockstep, "efficacy": split}
        null = [one_ab(rng, *args, **kw) for _ in range(a.suites)]
        alt = [one_ab(rng, *args, slow=(0, 1.10), **kw) for _ in range(a.suites)]
        looks = efficacy_looks(shares(a.alpha, a.tests, True)[0], max_rounds, *split)
        print(f"| {sigma:.0%} | {max_rounds} | {start} | {split[0]:.2g} of the share at {sorted(looks) or 'none'} | "
              f"{interval(sum(bool(f) for f, _, _ in null), a.suites)} | "
              f"{interval(sum(f == {0} for f, _, _ in alt), a.suites)} | "
              f"{np.mean([c for _, c, _ in null]):.1f} | {np.mean([c for _, c, _ in alt]):.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
