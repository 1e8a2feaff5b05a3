"""Quantized LPRNet.

Report: LPRNet reads licence plates at 89.9 % in FP32, 1.0 ms per plate, 1.89 MB of ONNX;
pruning (0.2) kept 89.6 %; Conv+BN fusion and int8 quantization gave 90 %, 0.59 ms per plate,
1.58 MB. Here the same network is trained on synthetic plates (``scripts/train_lprnet.py``,
weights committed) and the claims are checked on a held-out synthetic set:

* int8 keeps >= 99 % of the FP32 accuracy (MLPerf's rule) in a file <= 1/3 of the FP32 one;
* the variant under test reads >= 90 % of plates exactly, keeps >= 99 % of the FP32 accuracy,
  is >= 4x faster per plate than PyTorch eager FP32 on one core (>= 3x on CPUs without VNNI/AMX,
  where int8 does not pay), and meets its latency (batch 1 and 100), memory and size budgets.

``--perfcases-variant`` picks the variant under test: ``naive`` (= ``fp32``, eager), ``pruned``,
``onnx_fp32``, ``onnx_int8``, ``pruned_int8``, or ``optimized`` (the default: ``onnx_int8`` on CPUs
with VNNI/AMX, ``onnx_fp32`` elsewhere; see ``perfcases.lprnet.variants``). The ONNX models are
exported and quantized from the committed weights into a temporary directory, once per session.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch

from perfcases import lprnet
from perfcases.lprnet.compress import fold_batchnorm
from perfcases.lprnet.evaluate import Predictor, plate_accuracy
from perfcases.lprnet.export import quantize_int8
from perfcases.lprnet.model import ChannelStridePool, greedy_decode
from perfcases.lprnet.plates import TEST_SEED, PlateSet, make_plates, to_input
from perfcases.lprnet.variants import (
    Builder, Deployment, ModelFiles, fp32, int8_dot_product_cpu, onnx_fp32, onnx_int8, torch_predictor,
)
from pytest_perfguard import perf_budget

HELD_OUT = {"ci": 2000, "full": 10000}  # plates read for accuracy; the issue asks for >= 2,000
MLPERF = ">=0.99"  # an optimized model keeps >= 99 % of the FP32 accuracy

# What the suite claims depends on the CPU, because the default deployment does (variants.py):
# the int8 model where int8 kernels pay (VNNI/AMX), the float32 ONNX model elsewhere.
# Measured here (AMD EPYC with AVX-512 VNNI, 2 cores shared with other jobs; the full table is in
# docs/lprnet.md), median per plate at batch 1 / batch 100, over runs at different loads:
# onnx_int8 1.5-3.1 / 2.0-3.5 ms, onnx_fp32 3.1-5.2 / 3.4-6.0 ms, eager fp32 with PyTorch's
# default 2 threads 7.6 at best and 18-170 under load / 12 at best and 26-56 under load.
# Speed-up over eager, one core each: onnx_int8 7.6-11x / 11-13x, onnx_fp32 4.2-6.2x / 6.4-7.5x.
# Peak RSS growth at batch 100: 286-291 / 330 / 353-433 MiB. Files: int8 380 kB, FP32 ONNX
# 1.29 MB, FP32 state dict 1.30 MB. The latency budgets leave ~2x over onnx_int8 under load
# and fail eager even at its best. onnx_fp32 passes them (int8 is only ~2x faster, as noisy as
# this machine), so swapping the int8 model for the FP32 one is caught by the size budget and
# by the latency gate against the baseline (measured: 1.99x at batch 1, 1.52x at batch 100).
# CPUs without VNNI are not measured here: their budgets scale this CPU's onnx_fp32 figures by
# the report's figures (onnxruntime FP32 2-3 ms, eager 13-17 ms per plate) and need confirming there.
INT8_CPU = int8_dot_product_cpu()
if INT8_CPU:
    LATENCY_B1, LATENCY_B100, MEMORY_B100, SHIPPED_BYTES, SPEEDUP = "6ms", "8ms", "400MiB", "<=600e3", ">=4"
else:
    LATENCY_B1, LATENCY_B100, MEMORY_B100, SHIPPED_BYTES, SPEEDUP = "10ms", "12ms", "768MiB", "<=1.6e6", ">=3"


@pytest.fixture(scope="session")
def model_files(tmp_path_factory: pytest.TempPathFactory, device: str) -> ModelFiles:
    return ModelFiles(tmp_path_factory.mktemp("lprnet"), device=device)


@pytest.fixture(scope="session")
def build(model_files: ModelFiles) -> Callable[[Builder], Deployment]:
    """``build(variant)``: the variant's deployment, made once per session."""
    made: dict[Builder, Deployment] = {}

    def get(builder: Builder) -> Deployment:
        if builder not in made:
            made[builder] = builder(model_files)
        return made[builder]

    return get


@pytest.fixture
def deployment(pick_variant: Callable, build: Callable[[Builder], Deployment]) -> Deployment:
    """The variant under test (shared with the other tests of the session)."""
    return build(pick_variant(lprnet))


@pytest.fixture
def fresh_deployment(pick_variant: Callable, model_files: ModelFiles) -> Deployment:
    """The variant under test, loaded anew: its first call (the measured region's warm-up) then
    allocates its working memory (onnxruntime's arena, PyTorch's activations), which the memory
    budget sees as peak RSS growth."""
    return pick_variant(lprnet)(model_files)


@pytest.fixture(scope="session")
def held_out(scale: str, progress: Callable) -> PlateSet:
    count = HELD_OUT[scale]
    with progress(count, "rendering held-out plates") as advance:
        return make_plates(count, TEST_SEED, on_progress=advance)


@pytest.fixture(scope="session")
def first_100() -> PlateSet:
    """The first 100 held-out plates, rendered alone (plate i depends only on the seed and i), so
    a test that needs no more does not render the whole set when re-run under the profiler."""
    return make_plates(100, TEST_SEED)


@pytest.fixture(scope="session")
def accuracy(held_out: PlateSet) -> Callable[[Deployment], float]:
    """``accuracy(deployment)``: plate-level accuracy on the held-out set, computed once per variant."""
    known: dict[str, float] = {}

    def get(deployment: Deployment) -> float:
        if deployment.name not in known:
            known[deployment.name] = plate_accuracy(deployment.predict, held_out)
        return known[deployment.name]

    return get


@pytest.fixture(scope="session")
def fp32_accuracy(build: Callable[[Builder], Deployment], accuracy: Callable[[Deployment], float]) -> float:
    """The FP32 reference accuracy: the unpruned, unquantized model in float32 with per-plate
    context norm, read by onnxruntime (which reads like eager PyTorch: ``test_onnx_export_reads_like_eager``)."""
    return accuracy(build(onnx_fp32))


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """PyTorch on one thread, like the onnxruntime sessions (``ort_predictor``): the speed-up is
    then per core, and eager checks stay quick on a busy machine. Measured here, eager's second
    thread gains 1.35x at batch 1 on a quiet machine, and multiplies its median by 10 or more
    when a neighbour is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- correctness: plain tests, run by plain `pytest` too -----------------------------------------


def test_channel_stride_pool_equals_reference_maxpool3d():
    x = torch.randn(3, 128, 20, 90)
    for channel_stride, stride in ((1, (1, 1)), (2, (1, 2)), (4, (1, 2))):
        reference = torch.nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(channel_stride, *stride))
        assert torch.equal(ChannelStridePool(channel_stride, stride)(x), reference(x))


def test_greedy_decode_merges_repeats_and_drops_blanks():
    steps = [0, 0, 3, 1, 3, 1, 1, 2]  # A A _ B _ B B C, blank = 3
    logits = np.zeros((1, 4, len(steps)), dtype=np.float32)
    logits[0, steps, np.arange(len(steps))] = 1.0
    assert greedy_decode(logits, "ABC", blank=3) == ["ABBC"]


def test_plates_are_deterministic_and_addressable():
    whole = make_plates(6, seed=11)
    tail = make_plates(3, seed=11, start=3)
    assert np.array_equal(whole.images[3:], tail.images) and whole.texts[3:] == tail.texts
    assert make_plates(3, seed=12).texts != whole.texts[:3]


def test_batchnorm_folding_keeps_outputs(model_files: ModelFiles, first_100: PlateSet, one_torch_thread):
    model = model_files.model()
    x = torch.from_numpy(to_input(first_100.images[:20]))
    with torch.inference_mode():
        torch.testing.assert_close(fold_batchnorm(model)(x), model(x), rtol=1e-4, atol=1e-4)


def test_per_plate_context_norm_makes_batch_1_and_100_agree(model_files: ModelFiles, first_100: PlateSet,
                                                           one_torch_thread):
    x = torch.from_numpy(to_input(first_100.images[:100]))
    some = [0, 41, 99]  # plates also read alone
    per_plate, per_batch = model_files.model(), model_files.model(context_norm="batch")
    with torch.inference_mode():
        alone = torch.cat([per_plate(x[i:i + 1]) for i in some])
        torch.testing.assert_close(per_plate(x)[some], alone, rtol=1e-4, atol=1e-4)
        # The reference's batch-wide mean makes a plate's scores depend on its batch-mates.
        reference_alone = torch.cat([per_batch(x[i:i + 1]) for i in some])
        assert not torch.allclose(per_batch(x)[some], reference_alone, rtol=1e-4, atol=1e-4)


def test_int8_quantization_is_deterministic(model_files: ModelFiles, tmp_path):
    again = quantize_int8(model_files.onnx()[0], tmp_path / "again.onnx", model_files.calibration(),
                          reduce_range=model_files.reduce_range)
    assert again[0].read_bytes() == model_files.onnx(int8=True)[0].read_bytes()


def test_onnx_export_reads_like_eager(model_files: ModelFiles, build, first_100: PlateSet, one_torch_thread):
    x = to_input(first_100.images[:20])
    eager = torch_predictor(model_files.model())(x)
    np.testing.assert_allclose(build(onnx_fp32).predict(x), eager, rtol=1e-3, atol=1e-3)


# -- the claims ------------------------------------------------------------------------------------


@perf_budget(metrics={"accuracy_vs_fp32": MLPERF})
def test_int8_keeps_99_percent_of_fp32_accuracy(perf, build, accuracy, fp32_accuracy: float):
    int8 = accuracy(build(onnx_int8))
    perf.record(accuracy=int8, fp32_accuracy=fp32_accuracy, accuracy_vs_fp32=int8 / fp32_accuracy)


@perf_budget(metrics={"int8_vs_fp32_size": "<=0.3333"})
def test_int8_model_is_at_most_a_third_of_fp32(perf, build):
    """Graph plus external data, both sides."""
    int8, float32 = build(onnx_int8).model_bytes, build(onnx_fp32).model_bytes
    perf.record(int8_bytes=int8, fp32_bytes=float32, int8_vs_fp32_size=int8 / float32)


@perf_budget(accuracy=0.90, metrics={"accuracy_vs_fp32": MLPERF})
def test_variant_reads_held_out_plates(perf, deployment: Deployment, accuracy, fp32_accuracy: float):
    measured = accuracy(deployment)
    perf.record(accuracy=measured, accuracy_vs_fp32=measured / fp32_accuracy)


@perf_budget(metrics={"model_bytes": SHIPPED_BYTES})
def test_variant_ships_a_small_model(perf, deployment: Deployment):
    """The files the variant loads (ONNX graph plus external data, or the PyTorch state dict)."""
    perf.record(model_bytes=deployment.model_bytes)


# One ~1.5 ms call is at the mercy of the host (the median moved 1.4-2.4 ms between quiet runs
# minutes apart): the gate judges it against the spread between saved runs, at the default 5 %.
# The drill (int8 swapped for FP32) is 1.99x at batch 1.
@perf_budget(latency=LATENCY_B1, memory="32MiB")
def test_latency_per_plate_at_batch_1(perf, fresh_deployment: Deployment, first_100: PlateSet):
    plate = to_input(first_100.images[:1])
    perf(fresh_deployment.predict, plate, items=1)


# Between quiet runs on 2026-11-24 the median moved 2.07-2.42 ms per plate; the FP32 drill is
# 1.52-1.80x.
@perf_budget(latency=LATENCY_B100, memory=MEMORY_B100)
def test_latency_per_plate_at_batch_100(perf, fresh_deployment: Deployment, first_100: PlateSet):
    plates = to_input(first_100.images[:100])
    perf(fresh_deployment.predict, plates, items=100)


@perf_budget(metrics={"speedup_b1": SPEEDUP, "speedup_b100": SPEEDUP})
def test_faster_than_eager_fp32(perf, deployment: Deployment, model_files: ModelFiles, first_100: PlateSet,
                               one_torch_thread):
    """Both sides timed in the same run, alternately, on one core each (eager on the CPU even
    when the suites run on CUDA: the claim is about CPU deployment)."""
    eager = torch_predictor(model_files.model(context_norm="batch"))
    for batch in (1, 100):
        plates = to_input(first_100.images[:batch])
        perf.record(**{f"speedup_b{batch}": _speedup(deployment.predict, eager, plates)})


def _speedup(candidate: Predictor, reference: Predictor, plates: np.ndarray, seconds: float = 1.0) -> float:
    """How many times faster ``candidate`` reads ``plates`` than ``reference``: the fastest of
    alternating calls (at least 3 each, for about ``seconds``), since a busy neighbour only
    ever slows a call down. The same predictor on both sides gives 1."""
    best = {candidate: float("inf"), reference: float("inf")}
    deadline = time.perf_counter() + seconds
    for round_ in range(100):
        for predict in best:
            start = time.perf_counter()
            predict(plates)
            best[predict] = min(best[predict], time.perf_counter() - start)
        if round_ >= 2 and time.perf_counter() > deadline:
            break
    return best[reference] / best[candidate]
