"""The measured region of a profile re-run, the profile-path rule and the run's profile turns
(deterministic: a fake clock and a fake Scalene)."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pytest_perfguard import serial
from pytest_perfguard.perf import PROFILE_TIME, Perf
from pytest_perfguard.profile import ProfileError
from pytest_perfguard.region import RegionError, ScaleneRegion
from pytest_perfguard.rerun import profile_paths


class FakeScalene(types.ModuleType):
    """Stands in for ``scalene.scalene_profiler``: records when sampling was on."""

    def __init__(self) -> None:
        super().__init__("scalene.scalene_profiler")
        self.events: list[str] = []

    def start(self) -> None:
        self.events.append("start")

    def stop(self) -> None:
        self.events.append("stop")


@pytest.fixture
def fake_scalene(monkeypatch: pytest.MonkeyPatch) -> FakeScalene:
    fake = FakeScalene()
    monkeypatch.setitem(sys.modules, "scalene.scalene_profiler", fake)
    return fake


def test_perf_profiles_its_calls_after_one_warm_up_call_for_profile_time() -> None:
    clock = [0.0]
    log: list[str] = []
    inside = [False]

    @contextmanager
    def region() -> Iterator[None]:
        inside[0] = True
        log.append("on")
        yield
        log.append("off")
        inside[0] = False

    def fn(x: int) -> int:
        log.append("call in" if inside[0] else "call out")
        clock[0] += 0.3  # each call takes 0.3 s of the fake clock
        return x * 2

    perf = Perf(enabled=True, timer=lambda: clock[0], region=region)
    assert perf(fn, 21, items=3) == 42
    calls_inside = int(PROFILE_TIME / 0.3) + 1  # until PROFILE_TIME has passed inside the region
    assert log == ["call out", "on", *["call in"] * calls_inside, "off"]
    m = perf.measurement
    assert m is not None and m.rounds == calls_inside and m.unit == "item"
    assert m.samples == pytest.approx([0.1] * calls_inside)  # per item


def test_perf_profiles_one_slow_call_even_when_it_outlasts_profile_time() -> None:
    clock = [0.0]
    calls = []

    @contextmanager
    def region() -> Iterator[None]:
        yield

    def slow() -> None:
        calls.append(clock[0])
        clock[0] += 13.6

    perf = Perf(enabled=True, timer=lambda: clock[0], region=region)
    perf(slow)
    assert len(calls) == 2 and perf.measurement is not None and perf.measurement.samples == [13.6]


def test_scalene_region_nests_and_needs_scalene(fake_scalene: FakeScalene, tmp_path: Path) -> None:
    region = ScaleneRegion(tmp_path / "p.json")
    with region():
        with region():
            pass
        assert fake_scalene.events == ["start"]
    assert fake_scalene.events == ["start", "stop"]
    with pytest.raises(RuntimeError), region():
        raise RuntimeError("the test failed")
    assert fake_scalene.events == ["start", "stop", "start", "stop"]  # stopped however the region ends
    del sys.modules["scalene.scalene_profiler"]
    with pytest.raises(RegionError, match="not started by Scalene"):
        ScaleneRegion(tmp_path / "p.json")


def test_the_re_run_profiles_perf_calls_or_else_the_test_body(pytester: pytest.Pytester, fake_scalene: FakeScalene,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pytest_benchmark")
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)  # run under -n: pytest-benchmark would turn itself off
    pytester.makepyfile("""
        import sys
        import pytest

        def events():
            return list(sys.modules["scalene.scalene_profiler"].events)

        def work():
            pass

        @pytest.mark.perf_budget(latency="10s")
        def test_with_perf(perf):
            assert events() == []
            perf(work)
            assert events() == ["start", "stop"]  # only around perf(fn)'s calls

        @pytest.mark.perf_budget(latency="10s")
        def test_with_benchmark(benchmark):
            assert events()[-1] == "start"  # no perf(fn): the test body is the region
            benchmark(work)
    """)
    result = pytester.runpytest_inprocess("--perf", "--perf-profile=never", "-p", "no:randomly",
                                          f"--perf-profile-region={pytester.path / 'p.json'}")
    result.assert_outcomes(passed=2)
    assert fake_scalene.events == ["start", "stop", "start", "stop"]


def test_profile_paths_take_paths_then_module_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    (site / "mylib").mkdir(parents=True)
    (site / "mylib" / "__init__.py").write_text("")
    (site / "single.py").write_text("")
    monkeypatch.syspath_prepend(str(site))
    root = tmp_path / "proj"
    (root / "src").mkdir(parents=True)
    test_file = root / "tests" / "test_x.py"
    assert profile_paths(root, test_file, []) == [str(root / "src"), str(root / "tests")]
    assert profile_paths(root, test_file, ["src", "mylib", "single", "src"]) == \
        [str(root / "src"), str(site / "mylib"), str(site / "single.py")]
    with pytest.raises(ProfileError, match=r"'nope_not_a_module' is neither a path .* nor an importable module"):
        profile_paths(root, test_file, ["nope_not_a_module"])
    with pytest.raises(ProfileError, match="neither"):
        profile_paths(root, test_file, ["../elsewhere/missing"])


def test_profile_turns_are_shared_by_the_workers_and_removed_with_the_lock(tmp_path: Path) -> None:
    lock = tmp_path / "perfguard-run.lock"
    granted = []
    for _ in range(3):
        with serial.turn(lock, "profiles", 2) as ok:
            granted.append(ok)
    assert granted == [True, True, False]
    assert (tmp_path / "perfguard-run.lock.profiles").read_text() == "2"
    assert serial.remove_lock(lock) is True
    assert list(tmp_path.iterdir()) == []
