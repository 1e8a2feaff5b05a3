"""Thread-safe counter: 16 threads count up to a maximum.

As reported: the naive counter checks ``value < maximum`` and then increments, so threads
that pass the check together all increment and the final count overshoots the maximum.
The race is made reproducible by a yield point between check and increment (a
``time.sleep(0)`` hands the GIL to another thread exactly there). The fix holds a
``threading.Lock`` around check + increment.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["NaiveCounter", "LockedCounter", "naive", "optimized", "VARIANTS"]


class NaiveCounter:
    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self.value = 0

    def increment(self) -> bool:
        if self.value >= self.maximum:  # check ...
            return False
        time.sleep(0)  # yield point: another thread runs between the check and the increment
        self.value += 1  # ... then increment: not atomic with the check
        return True


class LockedCounter:
    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self.value = 0
        self._lock = threading.Lock()

    def increment(self) -> bool:
        with self._lock:  # check and increment as one step
            if self.value >= self.maximum:
                return False
            self.value += 1
            return True


def _race(counter: NaiveCounter | LockedCounter, threads: int) -> int:
    start = threading.Barrier(threads)

    def worker() -> None:
        start.wait()
        increment = counter.increment
        while increment():
            pass

    pool = [threading.Thread(target=worker, name=f"counter-{i}") for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return counter.value


def naive(threads: int = 16, maximum: int = 100_000) -> int:
    """The reported bug: returns the final count, which overshoots ``maximum``."""
    return _race(NaiveCounter(maximum), threads)


def optimized(threads: int = 16, maximum: int = 100_000) -> int:
    """The fix: returns exactly ``maximum``."""
    return _race(LockedCounter(maximum), threads)


VARIANTS: dict[str, Callable[..., int]] = {"naive": naive, "optimized": optimized}
