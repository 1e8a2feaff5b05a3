"""The timing loop with an injected clock, and the memory meter on real allocations."""

from __future__ import annotations

import gc

import numpy as np
import pytest

from pytest_perfguard import measure
from pytest_perfguard.measure import MemoryMeter, Settings, measure_calls


class FakeClock:
    """Each call of the measured function advances time by ``cost``; reading is free."""

    def __init__(self, cost: float) -> None:
        self.now = 0.0
        self.cost = cost
        self.calls = 0

    def __call__(self) -> float:
        return self.now

    def work(self) -> int:
        self.calls += 1
        self.now += self.cost
        return self.calls


def test_calibrates_calls_per_round_to_min_round_time():
    clock = FakeClock(cost=0.001)
    m, result = measure_calls(clock.work, Settings(min_rounds=5, max_time=0.1, min_round_time=0.01), timer=clock, memory=False)
    assert m.loops >= 10  # 1 ms calls batched into rounds of >= 10 ms
    assert m.loops * 0.001 >= 0.01
    assert all(s == pytest.approx(0.001) for s in m.samples)
    assert m.rounds == len(m.samples) >= 5
    assert result == clock.calls  # the last call's result is returned


def test_slow_calls_are_one_per_round_and_min_rounds_hold():
    clock = FakeClock(cost=0.5)
    m, _ = measure_calls(clock.work, Settings(min_rounds=7, max_time=0.0, min_round_time=0.01), timer=clock, memory=False)
    assert m.loops == 1
    assert m.rounds == 7


def test_rounds_run_until_max_time():
    clock = FakeClock(cost=0.01)
    m, _ = measure_calls(clock.work, Settings(min_rounds=2, max_time=1.0, min_round_time=0.01), timer=clock, memory=False)
    assert 95 <= m.rounds <= 105


def test_the_time_between_rounds_counts_toward_no_limit():
    """``perfguard ab --lockstep`` hands the CPU to the other side between two rounds: its round (here
    0.5 s of fake time) neither shortens this side's rounds nor shows in its samples or total time."""
    clock = FakeClock(cost=0.01)
    paused: list[float] = []

    def other_side() -> None:
        paused.append(clock.now)
        clock.now += 0.5

    m, _ = measure_calls(clock.work, Settings(min_rounds=2, max_time=1.0, min_round_time=0.01), timer=clock,
                         memory=False, between=other_side)
    assert 95 <= m.rounds <= 105
    assert len(paused) == m.rounds - 1  # between two rounds, never after the last
    assert all(s == pytest.approx(0.01) for s in m.samples)
    assert m.total_time < 1.1


def test_min_samples_raise_rounds_but_the_hard_cap_bounds_them():
    clock = FakeClock(cost=0.01)
    s = Settings(min_rounds=5, max_time=0.1, min_round_time=0.01, hard_cap_factor=10, min_cap=0.5)
    m, _ = measure_calls(clock.work, s, min_samples=50, timer=clock, memory=False)
    assert m.rounds == 50
    m, _ = measure_calls(clock.work, s, min_samples=10_000, timer=clock, memory=False)
    assert m.rounds <= 101  # capped at max_time * hard_cap_factor = 1 s of 10 ms rounds


def test_slow_calls_take_fewer_rounds_within_the_time_cap():
    """The issue's case: 20 rounds of a 13.6 s call took minutes. The cap (10x --perf-max-time, at least
    5 s) stops the rounds once 5 are in, and the measurement keeps the count it was asked for."""
    clock = FakeClock(cost=13.6)
    m, _ = measure_calls(clock.work, Settings(), timer=clock, memory=False)
    assert m.rounds == measure.FEWEST_ROUNDS == 5 and m.rounds_wanted == 20
    assert m.cut and m.rounds_note() == "5 of 20 rounds: slow calls, cut by --perf-time-cap"
    assert clock.calls == 1 + 5  # one warm-up call, then the rounds


def test_moderately_slow_calls_fill_the_cap():
    clock = FakeClock(cost=0.625)  # 16 rounds make the 10 s cap
    m, _ = measure_calls(clock.work, Settings(), timer=clock, memory=False)
    assert (m.rounds, m.rounds_wanted, m.cut) == (16, 20, True)


def test_quick_calls_keep_min_rounds_and_max_time():
    clock = FakeClock(cost=0.25)  # 20 rounds take 5 s: within the cap
    m, _ = measure_calls(clock.work, Settings(), timer=clock, memory=False)
    assert (m.rounds, m.cut, m.rounds_note()) == (20, False, "")


@pytest.mark.parametrize("cap, cost, rounds", [(3.0, 1.0, 5), (30.0, 1.0, 20), (2.5, 0.5, 5), (4.0, 0.5, 8)])
def test_an_explicit_time_cap_replaces_the_derived_one(cap, cost, rounds):
    clock = FakeClock(cost=cost)
    settings = Settings(time_cap=cap)
    assert settings.cap == cap
    m, _ = measure_calls(clock.work, settings, timer=clock, memory=False)
    assert m.rounds == rounds


def test_the_cap_never_cuts_below_a_lower_min_rounds():
    clock = FakeClock(cost=1.0)
    m, _ = measure_calls(clock.work, Settings(min_rounds=3, time_cap=0.5), timer=clock, memory=False)
    assert (m.rounds, m.cut) == (3, False)


@pytest.mark.parametrize("cost", [0.0009765625, 0.03125, 0.3, 0.6, 1.5, 4.0, 10.7, 30.0])
@pytest.mark.parametrize("min_samples", [0, 59])
def test_the_planned_round_count_is_the_one_taken(cost, min_samples):
    clock = FakeClock(cost=cost)
    settings = Settings(min_round_time=0.0)  # one call per round: the round time is the call's
    m, _ = measure_calls(clock.work, settings, min_samples=min_samples, timer=clock, memory=False)
    assert m.rounds == settings.rounds_for(cost, max(20, min_samples))


def test_items_normalise_samples_per_item():
    clock = FakeClock(cost=0.02)
    m, _ = measure_calls(clock.work, Settings(min_rounds=3, max_time=0.0), items=100, timer=clock, memory=False)
    assert m.unit == "item"
    assert all(s == pytest.approx(0.0002) for s in m.samples)


def test_gc_is_disabled_during_rounds_and_restored():
    seen = []

    def fn():
        seen.append(gc.isenabled())

    assert gc.isenabled()
    measure_calls(fn, Settings(min_rounds=3, max_time=0.0, min_round_time=0.0), memory=False)
    assert seen and not any(seen)
    assert gc.isenabled()


def test_progress_is_reported_once_for_long_tests():
    clock = FakeClock(cost=1.0)
    lines: list[str] = []
    measure_calls(clock.work, Settings(min_rounds=3, max_time=0.0), timer=clock, memory=False, progress=lines.append)
    assert lines == ["1 call(s)/round, ~3 rounds of 1 s"]


def test_progress_says_when_the_cap_cuts_the_rounds():
    clock = FakeClock(cost=13.6)
    lines: list[str] = []
    measure_calls(clock.work, Settings(), timer=clock, memory=False, progress=lines.append)
    assert lines == ["1 call(s)/round, ~5 rounds of 13.6 s (not 20: --perf-time-cap 10 s bounds slow calls to 5 or more)"]


def test_progress_is_not_reported_when_the_cap_keeps_the_rounds_short():
    clock = FakeClock(cost=0.1)  # 300 rounds asked for (a p99), 30 s of them, but the cap stops them at 1 s
    lines: list[str] = []
    measure_calls(clock.work, Settings(min_round_time=0.0, time_cap=1.0), min_samples=300, timer=clock, memory=False,
                  progress=lines.append)
    assert lines == []


MB200 = 200 * 10**6


def _numpy_200mb():
    a = np.ones(MB200, dtype=np.uint8)  # touched, so resident
    return int(a[::4096].sum())


@pytest.mark.parametrize("force_sampling", [False, True], ids=["vmhwm-or-fallback", "sampling"])
def test_memory_meter_sees_a_200mb_numpy_array(force_sampling):
    with MemoryMeter(force_sampling=force_sampling) as meter:
        _numpy_200mb()
    assert meter.mechanism in ("vmhwm", "sampling")
    if force_sampling:
        assert meter.mechanism == "sampling"
    assert meter.growth == pytest.approx(MB200, rel=0.10)


def test_vmhwm_mechanism_is_used_on_linux_when_permitted():
    if not measure._reset_peak():
        pytest.skip("this kernel refuses the peak-RSS reset; the sampling fallback is tested above")
    with MemoryMeter() as meter:
        _numpy_200mb()
    assert meter.mechanism == "vmhwm"
    assert meter.growth == pytest.approx(MB200, rel=0.10)


def test_memory_growth_is_reported_by_measure_calls():
    m, _ = measure_calls(_numpy_200mb, Settings(min_rounds=2, max_time=0.0, min_round_time=0.0))
    assert m.memory_mechanism in ("vmhwm", "sampling")
    assert m.memory_growth == pytest.approx(MB200, rel=0.10)


def test_torch_cpu_tensor_is_seen_when_torch_is_installed():
    torch = pytest.importorskip("torch")
    torch.zeros(1)  # import-time and first-use allocations happen outside the region

    def alloc():
        t = torch.ones(MB200 // 4, dtype=torch.float32)
        return float(t[::4096].sum())

    with MemoryMeter() as meter:
        alloc()
    assert meter.growth == pytest.approx(MB200, rel=0.10)


def test_a_call_result_is_not_held_while_the_next_call_runs():
    """Each call returns a fresh 64 MiB array: peak growth is one array, not two."""
    size = 64 * 2**20

    def fresh() -> np.ndarray:
        return np.ones(size, dtype=np.uint8)  # touched pages: resident

    m, last = measure_calls(fresh, Settings(min_rounds=4, max_time=0.0, min_round_time=0.0))
    assert last.nbytes == size and m.rounds >= 4
    assert m.memory_growth is not None
    assert 0.9 * size <= m.memory_growth < 1.5 * size
