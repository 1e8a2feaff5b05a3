"""Thread-safe counter.

Report: 16 threads count to a maximum of 100000 and overshoot it, because the counter
checks ``value < maximum`` and then increments in two steps. The fix holds a
``threading.Lock`` around check + increment. The claim: the count is exact, and the lock
keeps throughput well above the naive counter's.
"""

from __future__ import annotations

from perfcases import counter
from pytest_perfguard import perf_budget

THREADS = 16  # as reported
MAXIMUM = 100_000  # as reported; cheap enough that both scales use it


# Measured here (2-core x86_64): optimized 0.25-0.8 us per increment (1.2-4 M/s),
# naive ~10 us per increment (the yield point) and overshoots by ~15.
# Against the baseline at the default 5 % tolerance: 16 threads handing one lock around under the
# GIL follow the scheduler (best rounds 1.56x apart between quiet runs on 2026-11-24); the gate
# judges that against this test's own spread between saved runs and prints what it could flag.
@perf_budget(metrics={"final_count": f"=={MAXIMUM}"}, throughput="500k/s", memory="64MiB")
def test_counter_counts_exactly_to_maximum_under_16_threads(perf, pick_variant):
    run = pick_variant(counter)
    final = perf(run, threads=THREADS, maximum=MAXIMUM, items=MAXIMUM)
    perf.record(final_count=final)
