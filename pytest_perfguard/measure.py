"""Measuring a region: calibrated repeated timing, peak memory growth, CUDA synchronisation.

Timing follows pytest-benchmark/pyperf: one warm-up call, then calibrate how many calls make
one round last at least ``min_round_time``, then run rounds until both ``min_rounds`` and
``max_time`` are reached. The garbage collector is collected before and disabled during each
round. Each sample is one round's time divided by its calls (and by ``items``), so samples are
seconds per call or per item.

Slow calls: rounds also stop once they have taken ``Settings.cap`` seconds (``--perf-time-cap``)
and ``Settings.floor`` are in (5, the fewest a baseline comparison judges): a 10 s call takes 5
rounds, not 20, as pytest-benchmark's ``rounds = max(ceil(max_time / duration), min_rounds)``
with ``min_rounds`` 5 would. ``rounds_wanted`` keeps the count asked for; the checks say when the
cap cut it.

Every round is also timed on a CPU clock (``cpu_samples``): the measuring thread's CPU time
(``time.thread_time``), or the whole process's (``time.process_time``) when other threads of the
process worked during the rounds (torch's intra-op pool, a server thread): ``cpu_clock`` says
which. CPU time leaves out what a shared machine adds to wall time (other processes on the same
core, steal time); it also leaves out sleeps and I/O waits, and on the GPU it sees nothing, so a
CUDA region is judged on wall time (``synced``).

Memory is the growth of peak resident memory over the whole measured region, which sees
native allocations (numpy, torch) that ``tracemalloc`` cannot. Mechanisms, best first:

* ``vmhwm``: Linux. Writing ``5`` to ``/proc/self/clear_refs`` resets the kernel's peak RSS
  (``VmHWM``) to the current RSS; growth = VmHWM after - VmRSS before. Exact to the page,
  and nothing polls.
* ``sampling``: elsewhere, or when the reset is refused. A thread samples RSS with psutil
  every ``interval`` seconds; spikes shorter than the interval can be missed.

CUDA (only when torch is already imported; we never import it): once CUDA is initialised, before
the region or by the measured function's first call, every round waits for the GPU
(``torch.cuda.synchronize``) before the clock is read, so an asynchronous kernel is timed to its
end. GPU memory is torch's peak allocated memory over the region above what was allocated when it
began.
"""

from __future__ import annotations

import gc
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .decide import MIN_SAMPLES
from .units import format_duration

__all__ = ["CLOCKS", "FEWEST_ROUNDS", "Settings", "Measurement", "MemoryMeter", "cpu_times", "measure_calls",
           "cuda_synchronize", "cuda_active"]

CLOCKS = ("wall", "cpu")  # what a latency is timed by: perf_counter, or CPU time (see the module docstring)
FEWEST_ROUNDS = MIN_SAMPLES  # rounds the time cap never cuts below: a baseline comparison needs them
DECIDED_ROUNDS = 2  # the fewest rounds after which a decided verdict stops them (``measure_calls``)
PROGRESS_AFTER = 2.0  # seconds of planned rounds beyond which the plan is reported (``progress``)
OTHER_THREADS = 1.05  # process CPU time beyond this many times the thread's: other threads worked

_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


@dataclass(frozen=True)
class Settings:
    """Timing knobs, resolved once from options and ini (see ``plugin.py``)."""

    min_rounds: int = 20
    max_time: float = 1.0  # seconds of rounds after calibration
    min_round_time: float = 0.01  # seconds per round, calls are batched up to this
    warmup_calls: int = 1
    hard_cap_factor: float = 10.0  # without time_cap, the cap is max(max_time * this, min_cap)
    min_cap: float = 5.0
    time_cap: float | None = None  # seconds of rounds after which slow calls stop (``cap``); None: derived

    @property
    def cap(self) -> float:
        """Seconds of rounds after which no more are taken once ``floor`` rounds are in: it bounds the
        extra rounds a percentile budget asks for (``min_samples``), and ``min_rounds`` for slow calls."""
        if self.time_cap is not None:
            return self.time_cap
        return max(self.max_time * self.hard_cap_factor, self.min_cap)

    @property
    def floor(self) -> int:
        """The fewest rounds, whatever the cap: ``FEWEST_ROUNDS``, or ``min_rounds`` when lower."""
        return min(self.min_rounds, FEWEST_ROUNDS)

    def rounds_for(self, round_time: float, wanted: int) -> int:
        """How many rounds of ``round_time`` seconds ``measure_calls`` takes when ``wanted`` are asked for:
        whichever stop comes first, ``wanted`` and ``max_time``, or ``cap`` and ``floor``."""
        if round_time <= 0:
            return wanted
        return min(max(wanted, math.ceil(self.max_time / round_time)),
                   max(self.floor, math.ceil(self.cap / round_time)))


@dataclass
class Measurement:
    """What one measured region produced. JSON-safe via ``to_dict``."""

    samples: list[float] = field(default_factory=list)  # seconds per call (or per item)
    loops: int = 0  # calls per round
    items: int | None = None
    rounds: int = 0
    total_time: float = 0.0
    memory_growth: float | None = None  # bytes
    memory_mechanism: str | None = None
    gpu_memory_growth: float | None = None  # bytes
    source: str = "perf"  # "perf", "benchmark" (pytest-benchmark's samples) or "samples" (recorded)
    unit: str = "call"  # "call" or "item"
    remeasured: int = 0  # extra blocks of rounds taken to confirm a suspected regression
    cpu_samples: list[float] = field(default_factory=list)  # CPU seconds per call (or item), one per round
    cpu_clock: str | None = None  # "thread" or "process" (other threads of the process worked)
    synced: bool = False  # the rounds waited for a CUDA device: only wall time sees its work
    clock: str = "wall"  # the clock the regression gate judges (``gate.judged_samples``), set when judged
    instructions: float | None = None  # per call (or item), counted under callgrind (``callgrind``)
    instruction_counts: list[int] = field(default_factory=list)  # each repeat's count of one call
    run_bests: list[float | None] = field(default_factory=list)  # ``perfguard ab``: each run's best round
    summary: dict[str, Any] | None = None  # of every sample, read back where the samples arrive thinned
    rounds_wanted: int = 0  # the rounds asked for (min_rounds, or a percentile's need); more than ``rounds``: cut
    early: str = ""  # why the rounds stopped before ``rounds_wanted`` with the test's verdict decided (``decided``)

    def samples_on(self, clock: str) -> list[float]:
        """The rounds on ``clock`` ("wall" or "cpu")."""
        return list(self.cpu_samples if clock == "cpu" else self.samples)

    def replace_rounds(self, other: Measurement) -> None:
        """A block of rounds measured elsewhere (a fresh process: ``rerun.measure_fresh``) replaces this
        one; memory growth is kept."""
        self.samples, self.cpu_samples = list(other.samples), list(other.cpu_samples)
        self.loops, self.rounds = other.loops or self.loops, other.rounds or len(self.samples)
        self.rounds_wanted, self.early = other.rounds_wanted, other.early
        self.remeasured += 1

    @property
    def cut(self) -> bool:
        """The time cap stopped the rounds before the count asked for: the calls are slow."""
        return 0 < self.rounds < self.rounds_wanted

    def rounds_note(self) -> str:
        """What a check says of its round count: "" unless the time cap cut it."""
        if not self.cut:
            return ""
        if self.early:
            return f"{self.rounds} of {self.rounds_wanted} rounds: {self.early}"
        return f"{self.rounds} of {self.rounds_wanted} rounds: slow calls, cut by --perf-time-cap"


def cuda_active() -> bool:
    """True when torch is already imported and has initialised CUDA (we never import torch)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    try:
        return bool(torch.cuda.is_available() and torch.cuda.is_initialized())
    except Exception:
        return False


def cuda_synchronize() -> None:
    if cuda_active():
        sys.modules["torch"].cuda.synchronize()


def _status_kib(field_name: str) -> int | None:
    try:
        with open(_STATUS, encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_peak() -> bool:
    try:
        with open(_CLEAR_REFS, "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        return False
    hwm, rss = _status_kib("VmHWM"), _status_kib("VmRSS")
    # The reset only counts if the kernel honoured it: HWM must be back near the current RSS.
    return hwm is not None and rss is not None and hwm <= rss + 64


class MemoryMeter:
    """Context manager measuring peak RSS growth (bytes) over its body."""

    def __init__(self, interval: float = 0.001, force_sampling: bool = False) -> None:
        self.interval = interval
        self.force_sampling = force_sampling
        self.mechanism: str | None = None
        self.growth: float | None = None
        self._start = 0
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: Any = None

    def __enter__(self) -> MemoryMeter:
        if not self.force_sampling and _reset_peak():
            self.mechanism = "vmhwm"
            self._start = (_status_kib("VmRSS") or 0) * 1024
            return self
        import psutil

        self.mechanism = "sampling"
        self._proc = psutil.Process()
        self._start = self._peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._sample, name="perfguard-memory", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __exit__(self, *exc: object) -> None:
        if self.mechanism == "vmhwm":
            peak = (_status_kib("VmHWM") or 0) * 1024
        else:
            self._stop.set()
            assert self._thread is not None
            self._thread.join()
            peak = max(self._peak, self._proc.memory_info().rss)
        self.growth = float(max(0, peak - self._start))


class _GpuMeter:
    def __init__(self) -> None:
        self.growth: float | None = None
        self._start = 0

    def __enter__(self) -> _GpuMeter:
        if cuda_active():
            cuda = sys.modules["torch"].cuda
            cuda.synchronize()
            self._start = cuda.memory_allocated()
            cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc: object) -> None:
        # CUDA initialised inside the region: _start stays 0, the peak since then is all the region's
        if cuda_active():
            cuda = sys.modules["torch"].cuda
            cuda.synchronize()
            self.growth = float(max(0, cuda.max_memory_allocated() - self._start))


def cpu_times() -> tuple[float, float]:
    """This thread's and this process's CPU seconds so far."""
    return time.thread_time(), time.process_time()


def _round(fn: Callable[[], Any], loops: int, timer: Callable[[], float], sync: bool,
           cpu: Callable[[], tuple[float, float]]) -> tuple[float, Any, tuple[float, float]]:
    """Wall seconds, ``fn``'s last result, and (thread, process) CPU seconds of ``loops`` calls."""
    result = None
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        if sync:
            cuda_synchronize()
        cpu0 = cpu()
        start = timer()
        for _ in range(loops - 1):
            fn()  # results dropped at once: a kept result would add to the next call's peak memory
        result = fn()
        if sync:
            cuda_synchronize()
        elapsed = timer() - start
        cpu1 = cpu()
    finally:
        if gc_was_enabled:
            gc.enable()
    return elapsed, result, (cpu1[0] - cpu0[0], cpu1[1] - cpu0[1])


def measure_calls(
    fn: Callable[[], Any],
    settings: Settings,
    *,
    items: int | None = None,
    min_samples: int = 0,
    timer: Callable[[], float] = time.perf_counter,
    memory: bool = True,
    progress: Callable[[str], None] | None = None,
    cpu: Callable[[], tuple[float, float]] | None = None,
    decided: Callable[[list[float]], str | None] | None = None,
    between: Callable[[], None] | None = None,
) -> tuple[Measurement, Any]:
    """Warm up, calibrate, run rounds; return the measurement and ``fn``'s last result.

    ``min_samples`` raises the round count (e.g. so a p99 budget has the samples to back
    it), still bounded by ``max_time * hard_cap_factor``. ``cpu``: (thread, process) CPU seconds so
    far, ``cpu_times`` unless given. ``decided``: given the rounds so far (seconds per call, or per
    item), why the test's verdict cannot change any more (None while it can): the rounds stop once
    ``DECIDED_ROUNDS`` are in and it says so (``check.decided``: a budget missed tenfold).
    ``between``: called after each round but the last (``perfguard ab --lockstep`` hands the CPU to
    the other side for one of its rounds there); the time it takes counts toward no limit.
    """
    cpu = cpu or cpu_times
    sync = cuda_active()
    meter = MemoryMeter() if memory else None
    gpu = _GpuMeter()
    gc.collect()
    with gpu:
        if meter is not None:
            meter.__enter__()
        try:
            result = None
            t0 = timer()
            warm = 0.0
            warmups = max(1, settings.warmup_calls)
            while warmups > 0:
                result = None
                warm, result, _ = _round(fn, 1, timer, sync, cpu)
                warmups -= 1
                if not sync and cuda_active():
                    # fn initialised CUDA: from now on every round waits for the GPU, and one
                    # more synchronised warm-up call gives the calibration its true duration
                    sync = True
                    warmups = max(warmups, 1)
            result = None
            loops = _calibrate(fn, warm, settings.min_round_time, timer, sync, cpu)
            rounds_wanted = max(settings.min_rounds, min_samples)
            planned = settings.rounds_for(warm * loops, rounds_wanted)
            if progress is not None and warm * loops * planned > PROGRESS_AFTER:
                progress(_plan(settings, loops, warm * loops, rounds_wanted))
            samples: list[float] = []
            cpu_rounds: list[tuple[float, float]] = []
            start = timer()
            cap, floor = settings.cap, settings.floor
            per = float(items) if items else 1.0
            early = ""
            paused = 0.0
            while True:
                result = None  # not held while the next round runs (peak memory)
                elapsed, result, used = _round(fn, loops, timer, sync, cpu)
                samples.append(elapsed / loops / per)  # per call, or per item
                cpu_rounds.append(used)
                spent = timer() - start - paused
                if len(samples) >= rounds_wanted and spent >= settings.max_time:
                    break
                if spent >= cap and len(samples) >= floor:
                    break  # slow calls: the cap bounds min_rounds and min_samples, down to the floor
                if len(samples) >= 100_000:
                    break
                if decided is not None and DECIDED_ROUNDS <= len(samples) < rounds_wanted:
                    early = decided(samples) or ""
                    if early:
                        break
                if between is not None:
                    before = timer()
                    between()
                    paused += timer() - before
            total = timer() - t0 - paused
        finally:
            if meter is not None:
                meter.__exit__(None, None, None)
    cpu_samples, cpu_clock = _cpu_samples(cpu_rounds, loops * per)
    m = Measurement(
        samples=samples,
        loops=loops,
        items=items,
        rounds=len(samples),
        total_time=total,
        memory_growth=meter.growth if meter else None,
        memory_mechanism=meter.mechanism if meter else None,
        gpu_memory_growth=gpu.growth,
        unit="item" if items else "call",
        cpu_samples=cpu_samples,
        cpu_clock=cpu_clock,
        synced=sync,
        rounds_wanted=rounds_wanted,
        early=early,
    )
    return m, result


def _plan(settings: Settings, loops: int, round_time: float, wanted: int) -> str:
    """The progress line of a long measurement: calls per round, and about how many rounds of how long."""
    rounds = settings.rounds_for(round_time, wanted)
    cut = (f" (not {wanted}: --perf-time-cap {format_duration(settings.cap)} bounds slow calls to "
           f"{settings.floor} or more)") if rounds < wanted else ""
    return f"{loops} call(s)/round, ~{rounds} rounds of {format_duration(round_time)}{cut}"


def _cpu_samples(rounds: list[tuple[float, float]], per: float) -> tuple[list[float], str | None]:
    """CPU seconds per call (or item) of each round: the thread's, or the process's when other threads
    of the process worked during the rounds. Empty when the clock did not advance (too coarse)."""
    thread = sum(t for t, _ in rounds)
    process = sum(p for _, p in rounds)
    clock = "process" if process > OTHER_THREADS * thread else "thread"
    samples = [(p if clock == "process" else t) / per for t, p in rounds]
    if not samples or min(samples) <= 0:
        return [], None
    return samples, clock


def _calibrate(fn: Callable[[], Any], first: float, min_round_time: float, timer: Callable[[], float], sync: bool,
               cpu: Callable[[], tuple[float, float]]) -> int:
    """Calls per round so one round lasts at least ``min_round_time``."""
    if first >= min_round_time:
        return 1
    loops = 1
    elapsed = first
    for _ in range(30):
        if elapsed >= min_round_time:
            return loops
        if elapsed <= 0:
            loops *= 10
        else:
            loops = max(loops + 1, math.ceil(loops * min_round_time / elapsed * 1.2))
        elapsed, _, _ = _round(fn, loops, timer, sync, cpu)
    return loops


def process_rss() -> int:
    """Current resident set size in bytes (for reports)."""
    kib = _status_kib("VmRSS")
    if kib is not None:
        return kib * 1024
    import psutil

    return int(psutil.Process(os.getpid()).memory_info().rss)
