"""The CUDA paths: synchronised timing, GPU peak memory, and the suites' ``--perfcases-device``.

The GPU tests run where a CUDA device is present and are skipped with the reason elsewhere (CI
has none); the device option's CPU fallbacks are checked everywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from perfcases.device import cuda_available as _cuda_available

SUITES_CONFTEST = Path(__file__).resolve().parent.parent / "suites" / "conftest.py"


needs_cuda = pytest.mark.skipif(not _cuda_available(), reason="needs a CUDA device; torch.cuda.is_available() is False here")


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
    gpu_s = json.loads((pytester.path / "gpu_s.json").read_text())
    samples = json.loads((pytester.path / "run.json").read_text())["tests"][0]["measurement"]["samples"]
    assert gpu_s > 1e-3
    assert min(samples) >= 0.8 * gpu_s, (min(samples), gpu_s)


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
