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


def test_min_samples_raise_rounds_but_the_hard_cap_bounds_them():
    clock = FakeClock(cost=0.01)
    s = Settings(min_rounds=5, max_time=0.1, min_round_time=0.01, hard_cap_factor=10, min_cap=0.5)
    m, _ = measure_calls(clock.work, s, min_samples=50, timer=clock, memory=False)
    assert m.rounds == 50
    m, _ = measure_calls(clock.work, s, min_samples=10_000, timer=clock, memory=False)
    assert m.rounds <= 101  # capped at max_time * hard_cap_factor = 1 s of 10 ms rounds


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
    assert len(lines) == 1 and "rounds" in lines[0]


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
