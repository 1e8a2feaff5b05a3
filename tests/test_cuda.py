"""The CUDA paths: synchronised timing, GPU peak memory, and the suites' ``--perfcases-device``.

The GPU tests run where a CUDA device is present and are skipped with the reason elsewhere (CI
has none); the device option's CPU fallbacks are checked everywhere.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from perfcases.device import cuda_available as _cuda_available
from pytest_perfguard.measure import Settings, measure_calls

SUITES_CONFTEST = Path(__file__).resolve().parent.parent / "suites" / "conftest.py"


needs_cuda = pytest.mark.skipif(not _cuda_available(), reason="needs a CUDA device; torch.cuda.is_available() is False here")


def _assert_timed_to_the_kernel_end(path: Path) -> None:
    """Every measured round lasted at least 0.8x the kernel's time on the GPU (CUDA events)."""
    gpu_s = json.loads((path / "gpu_s.json").read_text())
    samples = json.loads((path / "run.json").read_text())["tests"][0]["measurement"]["samples"]
    assert gpu_s > 1e-3
    assert min(samples) >= 0.8 * gpu_s, (min(samples), gpu_s)


@needs_cuda
def test_an_asynchronous_kernel_is_timed_to_its_end(pytester: pytest.Pytester) -> None:
    # A launch returns in microseconds; the kernel runs ~tens of ms. Without synchronisation the
    # timed region would be the launch only. CUDA events time the same kernel on the GPU itself.
    pytester.makepyfile(test_sync="""
        import json
        import torch

        def sleep():
            torch.cuda._sleep(50_000_000)

        def test_kernel(perf):
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(); sleep(); end.record(); end.synchronize()
            gpu_s = start.elapsed_time(end) / 1e3
            perf(sleep)
            open("gpu_s.json", "w").write(json.dumps(gpu_s))
    """)
    result = pytester.runpytest("--perf", "--perf-json=run.json", "--perf-max-time=0.5")
    result.assert_outcomes(passed=1)
    _assert_timed_to_the_kernel_end(pytester.path)


@needs_cuda
def test_a_kernel_in_the_call_that_initialises_cuda_is_timed_to_its_end(pytester: pytest.Pytester) -> None:
    # Nothing touches CUDA before perf(...): the first call initialises it. A fresh process, so
    # that no earlier test has initialised CUDA already.
    pytester.makepyfile(test_first="""
        import json
        import torch

        def sleep():
            torch.cuda._sleep(50_000_000)

        def test_kernel(perf):
            assert not torch.cuda.is_initialized()
            perf(sleep)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(); sleep(); end.record(); end.synchronize()
            open("gpu_s.json", "w").write(json.dumps(start.elapsed_time(end) / 1e3))
    """)
    result = pytester.runpytest_subprocess("--perf", "--perf-json=run.json", "--perf-max-time=0.5")
    result.assert_outcomes(passed=1)
    _assert_timed_to_the_kernel_end(pytester.path)


@needs_cuda
def test_gpu_memory_sees_a_1_gib_allocation(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_gib="""
        import torch
        from pytest_perfguard import perf_budget

        def allocate():
            block = torch.empty(2**30, dtype=torch.uint8, device="cuda")
            block.fill_(1)
            del block

        @perf_budget(gpu_memory="900MiB")
        def test_allocates(perf):
            torch.zeros(1, device="cuda")  # CUDA initialised before the region
            perf(allocate)
    """)
    result = pytester.runpytest("--perf", "--perf-json=run.json", "--perf-max-time=0.2")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*gpu_memory*budget*900*"])
    growth = json.loads((pytester.path / "run.json").read_text())["tests"][0]["measurement"]["gpu_memory_growth"]
    assert growth >= 2**30


class FakeCuda:
    """An asynchronous GPU on a fake clock: a launch costs ``launch`` s on the host, and the kernel's
    ``kernel`` s of GPU time pass only when the host waits (``synchronize``). Allocations count
    towards the peak the way torch's caching allocator reports it."""

    def __init__(self, *, launch: float, kernel: float, initialized: bool) -> None:
        self.now = 0.0
        self.launch, self.kernel = launch, kernel
        self.pending = 0.0
        self.initialized = initialized
        self.allocated = self.peak = 0
        self.syncs = 0

    def clock(self) -> float:
        return self.now

    def run_kernel(self, nbytes: int = 0) -> None:
        self.initialized = True  # the first CUDA call of a process initialises CUDA
        self.now += self.launch
        self.pending += self.kernel
        self.peak = max(self.peak, self.allocated + nbytes)  # a temporary freed when the kernel ends

    # the torch.cuda calls the plugin makes
    def is_available(self) -> bool:
        return True

    def is_initialized(self) -> bool:
        return self.initialized

    def synchronize(self) -> None:
        self.syncs += 1
        self.now += self.pending
        self.pending = 0.0

    def memory_allocated(self) -> int:
        return self.allocated

    def max_memory_allocated(self) -> int:
        return self.peak

    def reset_peak_memory_stats(self) -> None:
        self.peak = self.allocated


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch):
    def install(**kwargs: float | bool) -> FakeCuda:
        cuda = FakeCuda(**kwargs)
        monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
        return cuda
    return install


SETTINGS = Settings(min_rounds=5, max_time=0.05, min_round_time=0.01)


@pytest.mark.parametrize("initialized", [True, False], ids=["cuda-initialised-before", "first-call-initialises-cuda"])
def test_every_round_waits_for_the_gpu(fake_cuda, initialized: bool) -> None:
    # A 1 us launch of a 2 ms kernel is 2 ms per call, also when the measured function is what
    # initialises CUDA (no CUDA call before perf(...)).
    cuda = fake_cuda(launch=1e-6, kernel=2e-3, initialized=initialized)
    m, _ = measure_calls(cuda.run_kernel, SETTINGS, timer=cuda.clock, memory=False)
    assert m.samples and all(s == pytest.approx(2e-3 + 1e-6) for s in m.samples)
    assert m.loops >= 5  # calibrated on synchronised calls: 2 ms calls batched into >= 10 ms rounds
    assert cuda.syncs >= 2 * m.rounds


@pytest.mark.parametrize("initialized", [True, False], ids=["cuda-initialised-before", "first-call-initialises-cuda"])
def test_gpu_memory_is_the_peak_above_what_was_allocated_before(fake_cuda, initialized: bool) -> None:
    cuda = fake_cuda(launch=1e-6, kernel=1e-3, initialized=initialized)
    cuda.allocated = cuda.peak = (3 << 20) if initialized else 0  # a model already on the GPU
    m, _ = measure_calls(lambda: cuda.run_kernel(nbytes=64 << 20), SETTINGS, timer=cuda.clock, memory=False)
    assert m.gpu_memory_growth == 64 << 20


def test_without_cuda_nothing_is_synchronised_and_gpu_memory_is_not_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    cuda = types.SimpleNamespace(is_available=lambda: False, is_initialized=lambda: False,
                                 synchronize=lambda: calls.append("synchronize"))
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    m, _ = measure_calls(lambda: None, SETTINGS, memory=False)
    assert calls == [] and m.gpu_memory_growth is None


def _device_suite(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(SUITES_CONFTEST.read_text())
    pytester.makepyfile(test_device="""
        from perfcases.device import gpu_budget

        GPU = gpu_budget("256MiB")

        def test_device(device):
            print("DEVICE", device, "GPU", GPU)
    """)


def test_cuda_without_a_gpu_skips_with_the_reason(pytester: pytest.Pytester) -> None:
    if _cuda_available():
        pytest.skip("this machine has CUDA: the skip path cannot be seen here")
    _device_suite(pytester)
    result = pytester.runpytest("--perfcases-device=cuda", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*--perfcases-device=cuda: this machine has no CUDA device*"])


@pytest.mark.parametrize("choice", ["auto", "cpu"])
def test_auto_and_cpu_resolve_to_what_the_machine_has(pytester: pytest.Pytester, choice: str) -> None:
    _device_suite(pytester)
    result = pytester.runpytest(f"--perfcases-device={choice}", "-s")
    result.assert_outcomes(passed=1)
    expected = "cuda" if choice == "auto" and _cuda_available() else "cpu"
    budget = "{'gpu_memory': '256MiB'}" if expected == "cuda" else "{}"
    result.stdout.fnmatch_lines([f"*DEVICE {expected} GPU {budget}"])


FAKE_TORCH = """
import types

cuda = types.SimpleNamespace(is_available=lambda: True, is_initialized=lambda: False, device_count=lambda: 1,
                             get_device_name=lambda index: "NVIDIA H100 80GB HBM3")


def get_num_threads():
    return 2
"""


def test_gpus_unknown_until_the_tests_import_torch_are_not_a_hardware_difference(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    # torch is imported by the test module, after the baseline was chosen at session start: the
    # saved file lists the GPU, and the next run, which cannot see it yet, must not call that a
    # different machine.
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    pytester.syspathinsert()
    pytester.makepyfile(torch=FAKE_TORCH)
    pytester.makepyfile(test_gpu="""
        import torch

        def test_model(perf):
            perf.record_latencies([0.001] * 20)  # fixed samples: the machine's noise is not what this checks
    """)
    args = ("--perf", "--perf-max-time=0.01", "--perf-min-rounds=5", "-p", "no:cacheprovider")
    pytester.runpytest(*args, "--perf-save").assert_outcomes(passed=1)
    (path,) = (pytester.path / "baselines").glob("*.json")
    assert json.loads(path.read_text())["machine"]["hardware"]["gpus"] == ["NVIDIA H100 80GB HBM3"]
    again = pytester.runpytest(*args)
    again.assert_outcomes(passed=1)
    again.stdout.fnmatch_lines([f"*baseline *{path.name} (1 tests*"])
    assert "different hardware" not in again.stdout.str()
