"""``--perf-threads``: torch's thread count pinned and recorded in the baseline's fingerprint."""

from __future__ import annotations

import json
import os
import sys
import types

import pytest

from pytest_perfguard.machine import machine_fingerprint


class FakeTorch(types.ModuleType):
    """Just enough of torch for the plugin: thread count and no CUDA."""

    def __init__(self, threads: int = 2) -> None:
        super().__init__("torch")
        self.threads = threads
        self.cuda = types.SimpleNamespace(is_available=lambda: False, is_initialized=lambda: False)

    def set_num_threads(self, n: int) -> None:
        self.threads = n

    def get_num_threads(self) -> int:
        return self.threads


def test_fingerprint_reads_torch_threads_only_when_torch_is_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert "torch_threads" not in machine_fingerprint()["software"]
    monkeypatch.setitem(sys.modules, "torch", FakeTorch(threads=3))
    assert machine_fingerprint()["software"]["torch_threads"] == 3
    assert machine_fingerprint(threads=1)["software"]["torch_threads"] == 1


def test_perf_threads_pins_torch_and_is_saved_with_the_baseline(pytester: pytest.Pytester,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeTorch(threads=2)
    monkeypatch.setitem(sys.modules, "torch", fake)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    pytester.makepyfile(
        """
        import os, torch

        def test_pinned(perf):
            perf(sum, range(10))
            assert torch.get_num_threads() == 1
            assert os.environ["OMP_NUM_THREADS"] == "1"
        """
    )
    result = pytester.runpytest("--perf", "--perf-save", "--perf-threads=1", "--perf-max-time=0.01",
                                "--perf-min-rounds=2", "--perf-machine=box")
    result.assert_outcomes(passed=1)
    saved = json.loads((pytester.path / "baselines" / "box.json").read_text())
    assert saved["machine"]["software"]["torch_threads"] == 1
    assert fake.threads == 1 and os.environ["OMP_NUM_THREADS"] == "1"


def test_perf_threads_without_torch_is_a_usage_error(pytester: pytest.Pytester,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest("--perf-threads=2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--perf-threads pins torch's thread count, but torch is not installed*"])


@pytest.mark.parametrize("value", ["0", "-1"])
def test_perf_threads_must_be_positive(pytester: pytest.Pytester, value: str) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest(f"--perf-threads={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--perf-threads must be >= 1*"])


def test_torch_threads_unknown_at_session_start_is_not_a_software_difference() -> None:
    from pytest_perfguard.machine import compare_fingerprints

    saved = {"hardware": {}, "software": {"python": "3.11.7", "torch_threads": 2}}
    _, software = compare_fingerprints(saved, {"hardware": {}, "software": {"python": "3.11.7"}})
    assert software == []
    _, software = compare_fingerprints(saved, {"hardware": {}, "software": {"python": "3.11.7", "torch_threads": 1}})
    assert software == ["torch threads 2 -> 1"]


# --- the hint for torch users: timings with torch's default threads ------------------------------

TWO_TESTS = """
def test_a(perf):
    perf(sum, range(10))

def test_b(perf):
    perf(sum, range(10))
"""
QUICK = ["--perf", "--perf-max-time=0.01", "--perf-min-rounds=2", "--perf-machine=box", "--perf-profile=never",
         "-p", "no:cacheprovider"]


def hints(result: pytest.RunResult) -> list[str]:
    return [line for line in result.stdout.lines if line.startswith("perfguard: hint:")]


@pytest.fixture
def unpinned(monkeypatch: pytest.MonkeyPatch) -> None:
    """--perf-threads sets these for child processes: restored after the test."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)


def test_a_hint_names_perf_threads_once_when_torch_timed_tests_on_several_threads(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, unpinned: None) -> None:
    monkeypatch.setitem(sys.modules, "torch", FakeTorch(threads=2))
    pytester.makepyfile(TWO_TESTS)
    result = pytester.runpytest(*QUICK)
    result.assert_outcomes(passed=2)
    (hint,) = hints(result)  # once a run, not once a test
    assert hint.startswith("perfguard: hint: torch ran 2 intra-op threads in the timed tests")
    assert "run with --perf-threads 1" in hint
    # the user pinned the threads (any count, on the command line or in the ini): no hint
    assert hints(pytester.runpytest(*QUICK, "--perf-threads=2")) == []
    pytester.makeini("[pytest]\nperfguard_threads = 2\n")
    assert hints(pytester.runpytest(*QUICK)) == []


def test_no_hint_with_one_thread_without_torch_or_without_timing(pytester: pytest.Pytester,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(TWO_TESTS)
    monkeypatch.setitem(sys.modules, "torch", FakeTorch(threads=1))
    assert hints(pytester.runpytest(*QUICK)) == []
    monkeypatch.setitem(sys.modules, "torch", FakeTorch(threads=4))
    assert hints(pytester.runpytest("-p", "no:cacheprovider")) == []  # no --perf: nothing timed
    monkeypatch.delitem(sys.modules, "torch")
    result = pytester.runpytest(*QUICK)
    result.assert_outcomes(passed=2)
    assert hints(result) == []
    assert "torch" not in sys.modules  # looked up, never imported


def test_the_hint_comes_from_xdist_workers(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    # each worker imports this stand-in for torch (a fresh process: the real torch is not imported)
    pytester.makepyfile(torch="""
        import types

        _threads = 3
        cuda = types.SimpleNamespace(is_available=lambda: False, is_initialized=lambda: False)


        def get_num_threads():
            return _threads


        def set_num_threads(n):
            global _threads
            _threads = n
    """)
    pytester.makepyfile(test_torch="import torch\n\nassert torch.get_num_threads() == 3\n" + TWO_TESTS)
    result = pytester.runpytest(*QUICK, "-n", "2")
    result.assert_outcomes(passed=2)
    (hint,) = hints(result)
    assert hint.startswith("perfguard: hint: torch ran 3 intra-op threads")
