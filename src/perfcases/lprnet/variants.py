"""The LPRNet variants the suite measures, and the per-CPU choice of the optimized one.

Each variant is a builder, ``VARIANTS[name](files) -> Deployment``: ``files`` is a
``ModelFiles`` that makes the exported and quantized models on first use (deterministically,
from the committed weights); a ``Deployment`` is a plate reader plus the files it ships.

=============== ===================================================================
``fp32``        PyTorch eager, the reference as published (batch-wide context norm)
``pruned``      PyTorch eager, L1-unstructured pruning at the amount the sweep chose
``onnx_fp32``   onnxruntime, Conv+BN folded, float32
``onnx_int8``   onnxruntime, Conv+BN folded, static int8 QDQ calibrated on plates (7-bit
                weights on CPUs without VNNI/AMX, see ``export``)
``pruned_int8`` the combination: pruned, folded, static int8
=============== ===================================================================

``naive`` is ``fp32``. ``optimized`` is chosen per CPU: ``onnx_int8`` where the CPU has 8-bit
dot-product instructions (AVX-512 VNNI, AVX-VNNI, AMX), ``onnx_fp32`` elsewhere. Measured
here (AVX-512 VNNI), int8 reads a plate 1.5-2x faster than onnxruntime float32; on an
AVX2 CPU without VNNI the report measured it no faster, so there only the file
would shrink. ``pruned_int8`` is never chosen: dense kernels and dense files gain nothing
from zeros, and pruning costs accuracy.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch

from .compress import fold_batchnorm, prune_l1
from .evaluate import Predictor
from .export import export_onnx, file_bytes, quantize_int8
from .model import ContextNorm, LPRNet
from .plates import CALIBRATION_SEED, NUM_CLASSES, make_plates, to_input

__all__ = [
    "WEIGHTS", "METADATA", "Builder", "Deployment", "ModelFiles", "VARIANTS", "load_model", "torch_predictor",
    "ort_predictor", "int8_dot_product_cpu", "optimized_name",
]

WEIGHTS = Path(__file__).with_name("weights") / "lprnet.pt"
METADATA = WEIGHTS.with_suffix(".json")  # written with the weights by scripts/train_lprnet.py
INT8_DOT_PRODUCT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


@dataclass(frozen=True)
class Deployment:
    """A plate reader and the model files it ships."""

    name: str
    predict: Predictor
    files: list[Path]

    @property
    def model_bytes(self) -> int:
        return file_bytes(self.files)


def load_model(context_norm: ContextNorm = "sample", weights: Path = WEIGHTS) -> LPRNet:
    """The trained LPRNet in eval mode."""
    model = LPRNet(NUM_CLASSES, context_norm=context_norm)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


def torch_predictor(model: LPRNet, device: str = "cpu") -> Predictor:
    """PyTorch eager inference (no autograd bookkeeping) on ``device``."""
    model = model.to(device)

    def predict(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(images).to(device)).cpu().numpy()

    return predict


def ort_predictor(path: Path) -> Predictor:
    """onnxruntime inference on the CPU: all graph optimizations, one intra-op thread, and no
    memory pattern.

    One thread: a plate reader serves one camera stream per core, and on a shared 2-core
    machine two spinning threads made the median batch-1 latency ~2x worse than one (measured
    here under load). No memory pattern: the pattern pre-plans one block for every activation
    of a batch; without it peak RSS growth at batch 100 dropped 646 -> 336 MiB (float32) and
    461 -> 300 MiB (int8), measured here, and speed did not suffer (3.8 -> 3.4 and
    2.19 -> 2.21 ms per plate).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.enable_mem_pattern = False
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def predict(images: np.ndarray) -> np.ndarray:
        return session.run(None, {name: images})[0]

    return predict


class ModelFiles:
    """The models every variant is built from, written on first use into ``workdir``.

    Everything derives from the committed weights: the pruned state dict, the folded ONNX
    exports and their int8 quantizations (calibrated on ``calibration_plates`` plates of the
    calibration set). Each file is made once per ``ModelFiles``.

    ``reduce_range``: quantize the weights to 7 bits, not 8. The default is 7 bits where the
    CPU has no 8-bit dot-product instructions (see ``export``'s docstring); the file names differ
    (``*_int8_w7.onnx``), so the two models never share a file.
    """

    def __init__(self, workdir: Path, weights: Path = WEIGHTS, calibration_plates: int = 200,
                 metadata: Path = METADATA, device: str = "cpu", reduce_range: bool | None = None) -> None:
        self.workdir = workdir
        self.reduce_range = not int8_dot_product_cpu() if reduce_range is None else reduce_range
        self.device = device  # where the PyTorch variants run; the ONNX Runtime ones run on the CPU
        self.weights = weights
        self.calibration_plates = calibration_plates
        self.pruning_amount = float(json.loads(metadata.read_text())["pruning_amount"])
        self._made: dict[str, list[Path]] = {}

    def model(self, pruned: bool = False, context_norm: ContextNorm = "sample") -> LPRNet:
        model = load_model(context_norm, self.weights)
        return prune_l1(model, self.pruning_amount) if pruned else model

    def state_dict(self, pruned: bool = False) -> list[Path]:
        """The PyTorch weights file: the committed one, or the pruned copy (as dense as the original)."""
        if not pruned:
            return [self.weights]
        return self._make("pruned.pt", lambda path: _save(self.model(pruned=True), path))

    def onnx(self, pruned: bool = False, int8: bool = False) -> list[Path]:
        """The folded float32 ONNX export, or its static int8 quantization."""
        stem = ("pruned_" if pruned else "") + "lprnet"
        fp32 = self._make(f"{stem}_fp32.onnx",
                          lambda path: export_onnx(fold_batchnorm(self.model(pruned)), path))
        if not int8:
            return fp32
        int8_name = f"{stem}_int8_w7.onnx" if self.reduce_range else f"{stem}_int8.onnx"
        return self._make(int8_name, lambda path: quantize_int8(fp32[0], path, self.calibration(),
                                                                reduce_range=self.reduce_range))

    def calibration(self) -> np.ndarray:
        """The float inputs int8 quantization calibrates its activation ranges on."""
        return to_input(make_plates(self.calibration_plates, CALIBRATION_SEED).images)

    def _make(self, name: str, build: Callable[[Path], list[Path]]) -> list[Path]:
        """``build(workdir / name)`` once; returns the files it wrote."""
        if name not in self._made:
            self._made[name] = build(self.workdir / name)
        return self._made[name]


def _save(model: LPRNet, path: Path) -> list[Path]:
    torch.save(model.state_dict(), path)
    return [path]


def fp32(files: ModelFiles) -> Deployment:
    """The reference as published: eager PyTorch, context normalised over the whole batch."""
    return Deployment("fp32", torch_predictor(files.model(context_norm="batch"), files.device), files.state_dict())


def pruned(files: ModelFiles) -> Deployment:
    return Deployment("pruned", torch_predictor(files.model(pruned=True), files.device), files.state_dict(pruned=True))


def onnx_fp32(files: ModelFiles) -> Deployment:
    model = files.onnx()
    return Deployment("onnx_fp32", ort_predictor(model[0]), model)


def onnx_int8(files: ModelFiles) -> Deployment:
    model = files.onnx(int8=True)
    return Deployment("onnx_int8", ort_predictor(model[0]), model)


def pruned_int8(files: ModelFiles) -> Deployment:
    model = files.onnx(pruned=True, int8=True)
    return Deployment("pruned_int8", ort_predictor(model[0]), model)


@cache
def int8_dot_product_cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU has 8-bit dot-product instructions (VNNI or AMX), per /proc/cpuinfo."""
    try:
        text = cpuinfo.read_text()
    except OSError:  # not Linux: no flags to read, assume none
        return False
    flags = {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}
    return bool(flags & INT8_DOT_PRODUCT_FLAGS)


def optimized_name() -> str:
    """The fastest deployable variant on this CPU (see the module docstring)."""
    return "onnx_int8" if int8_dot_product_cpu() else "onnx_fp32"


Builder = Callable[[ModelFiles], Deployment]
_NAMED: dict[str, Builder] = {
    "fp32": fp32, "pruned": pruned, "onnx_fp32": onnx_fp32, "onnx_int8": onnx_int8, "pruned_int8": pruned_int8,
}
VARIANTS: dict[str, Builder] = {**_NAMED, "naive": fp32, "optimized": _NAMED[optimized_name()]}
