"""The ``perf`` fixture's object: measure one region, record quality metrics."""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any

from .callgrind import Counter
from .measure import Measurement, Settings, cuda_synchronize, measure_calls
from .sampled import Sampled

__all__ = ["Perf", "PerfUsageError", "PROFILE_TIME"]

Region = Callable[[], AbstractContextManager[None]]
PROFILE_TIME = 1.0  # seconds of calls under the profiler in a profile re-run (Scalene samples every 10 ms)


class PerfUsageError(RuntimeError):
    """The ``perf`` fixture was used in a way that cannot give an honest measurement."""


class Perf:
    """Measures one region per test.

    ``perf(fn, *args, items=None, **kwargs)`` calls ``fn(*args, **kwargs)``: once when
    measurement is off (``pytest`` without ``--perf``), else warm-up, calibration and
    repeated rounds. It returns ``fn``'s last result. ``perf.record(accuracy=0.98)`` stores
    quality metrics, ``perf.record(accuracy=per_item_correct)`` one from its items (the mean, judged
    against the baseline with its sampling error); ``perf.record_latencies([...])`` stores latencies measured elsewhere
    (e.g. per-request times from a load test).
    """

    def __init__(
        self,
        *,
        enabled: bool,
        settings: Settings | None = None,
        min_samples: int = 0,
        timer: Callable[[], float] = time.perf_counter,
        progress: Callable[[str], None] | None = None,
        counter: Counter | None = None,
        region: Region | None = None,
        decided: Callable[[list[float]], str | None] | None = None,
        between: Callable[[], None] | None = None,
    ) -> None:
        self.enabled = enabled
        self.settings = settings or Settings()
        self.min_samples = min_samples
        self.timer = timer
        self.progress = progress
        self.measurement: Measurement | None = None
        self.metrics: dict[str, float] = {}
        self.sampled: dict[str, Sampled] = {}  # the metrics recorded from their items
        self._call: Callable[[], Any] | None = None
        self.counter = counter  # under --perf-instructions: regions are counted, not timed
        self.region = region  # in a profile re-run: the profiler samples only inside it (``_profile``)
        self.decided = decided  # rounds so far -> why the test's verdict is decided (``check.decided``), or None
        self.between = between  # called between rounds (``perfguard ab --lockstep``: the other side's turn)

    def __call__(self, fn: Callable[..., Any], *args: Any, items: int | None = None, **kwargs: Any) -> Any:
        if not callable(fn):
            raise PerfUsageError(f"perf() needs a callable first, got {type(fn).__name__}")
        if items is not None and (isinstance(items, bool) or not isinstance(items, int) or items <= 0):
            raise PerfUsageError(f"perf(items=...) must be a positive int, got {items!r}")
        if self.measurement is not None:
            raise PerfUsageError("perf() was already called in this test: one measured region per test "
                                 "(split it into tests or parametrize)")
        if not self.enabled:
            return fn(*args, **kwargs)

        def call() -> Any:
            return fn(*args, **kwargs)

        self._call = call
        if self.region is not None:
            return self._profile(call, items)
        if self.counter is not None:
            result = call()  # uninstrumented: imports and caches warm before anything is counted
            got = self.counter.count(call, items=items)
            self.measurement = Measurement(instructions=got.per, instruction_counts=list(got.counts), items=items,
                                           source="callgrind", unit="item" if items else "call")
            return result
        self.measurement, result = measure_calls(
            call, self.settings, items=items, min_samples=self.min_samples, timer=self.timer, progress=self.progress,
            decided=self.decided, between=self.between,
        )
        return result

    def _profile(self, call: Callable[[], Any], items: int | None) -> Any:
        """A profile re-run: one call outside the profile (imports, caches and lazy initialisation
        warm up), then calls inside ``region`` until ``PROFILE_TIME`` has passed. Their times are
        the re-run's samples; under the profiler they are slower and are judged by nothing."""
        result = call()
        cuda_synchronize()
        assert self.region is not None
        samples: list[float] = []
        with self.region():
            start = self.timer()
            while not samples or self.timer() - start < PROFILE_TIME:
                t0 = self.timer()
                result = call()
                cuda_synchronize()
                samples.append(self.timer() - t0)
        per = float(items) if items else 1.0
        self.measurement = Measurement(samples=[s / per for s in samples], loops=1, items=items, rounds=len(samples),
                                       total_time=sum(samples), unit="item" if items else "call")
        return result

    def replace_rounds(self, other: Measurement) -> None:
        """A block of rounds measured elsewhere (a fresh process: ``rerun.measure_fresh``) replaces this
        one, as ``remeasure`` does; memory growth is kept."""
        assert self.measurement is not None
        self.measurement.replace_rounds(other)

    def remeasure(self) -> bool:
        """Measure the same region once more; the new block of rounds replaces the old one.

        Used to confirm a suspected regression before failing a test: a burst of noise during
        the first block rarely lasts through the second, and judging each block alone (the same
        number of rounds as the baseline's, never a pooled 2-3x larger one whose fastest rounds are
        faster by chance) keeps the comparison fair. Memory growth is kept. False when there is
        nothing to re-run.
        """
        if self._call is None or self.measurement is None or self.counter is not None:
            return False
        m = self.measurement
        more, _ = measure_calls(self._call, self.settings, items=m.items, min_samples=self.min_samples,
                                timer=self.timer, memory=False)
        m.samples, m.loops, m.rounds, m.total_time = more.samples, more.loops, more.rounds, more.total_time
        m.rounds_wanted = more.rounds_wanted
        m.cpu_samples, m.cpu_clock = more.cpu_samples, more.cpu_clock
        m.remeasured += 1
        return True

    def record(self, **metrics: Any) -> None:
        """Record quality metrics: a number (``accuracy=0.98``, ``final_count=100000``), or the
        per-item values a mean comes from (``accuracy=correct``, a 0/1 array or list; ``loss=losses``)."""
        for name, value in metrics.items():
            if _is_items(value):
                try:
                    items = Sampled.of(value)
                except (TypeError, ValueError) as exc:
                    raise PerfUsageError(f"perf.record({name}=[...]): {exc}") from None
                self.metrics[name], self.sampled[name] = items.mean, items
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                # numpy / torch scalars: accept what converts to a real number
                try:
                    value = float(value)
                except (TypeError, ValueError):
                    raise PerfUsageError(f"perf.record({name}=...) needs a number or a sequence of numbers, "
                                         f"got {type(value).__name__}") from None
            if not math.isfinite(float(value)):
                raise PerfUsageError(f"perf.record({name}={value!r}): the value is not finite")
            self.metrics[name] = float(value)
            self.sampled.pop(name, None)

    def record_latencies(self, seconds: Iterable[float], *, items: int | None = None) -> None:
        """Use latencies measured elsewhere (one sample per request, in seconds) as this test's samples."""
        if self.measurement is not None:
            raise PerfUsageError("this test already has a measured region; record_latencies() replaces none")
        samples = [float(s) for s in seconds]
        bad = [s for s in samples if not (math.isfinite(s) and s > 0)]
        if not samples or bad:
            raise PerfUsageError("record_latencies() needs a non-empty list of finite, positive seconds"
                                 + (f"; got {bad[0]!r} among {len(samples)}" if bad else ""))
        if not self.enabled or self.counter is not None:
            return  # under callgrind nothing is timed, so latencies measured elsewhere are not used either
        per = float(items) if items else 1.0
        self.measurement = Measurement(
            samples=[s / per for s in samples], loops=1, items=items, rounds=len(samples),
            total_time=sum(samples), source="samples", unit="item" if items else "call",
        )


def _is_items(value: Any) -> bool:
    """A sequence or array of per-item values (not a scalar, a string or a 0-d array)."""
    if isinstance(value, (str, bytes)) or isinstance(value, numbers.Real):
        return False
    shape = getattr(value, "shape", None)
    if shape is not None:
        return len(shape) > 0
    return isinstance(value, Iterable)
