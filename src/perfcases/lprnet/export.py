"""ONNX export and onnxruntime static int8 quantization of a (folded) LPRNet.

``export_onnx`` uses ``torch.onnx.export``'s default (dynamo) exporter with a dynamic batch
axis; it writes the weights to a separate ``.onnx.data`` file, so a model's size on disk is
the graph plus that file (``file_bytes``). ``quantize_int8`` is onnxruntime's static QDQ
quantization calibrated on real (synthetic) plates: unsigned 8-bit activations, signed
8-bit per-channel weights (U8S8, the fast pairing of onnxruntime's x86 kernels), MinMax
ranges. The average pools stay in float: onnxruntime's QLinearAveragePool is a slow kernel
(measured here: 0.72 ms of a 2.5 ms batch-1 read, against 0.07 ms for the float pools),
and they only feed the global context. Both steps are deterministic for the same model and
calibration plates.

``reduce_range=True`` quantizes the weights to 7 bits (-64..64) instead of 8. The caller sets it
where the CPU lacks 8-bit dot-product instructions (``variants.int8_dot_product_cpu``). There
onnxruntime's U8S8 kernels add pairs of u8 x s8 products in 16 bits with saturation (AVX2's
VPMADDUBSW), which 8-bit weights can overflow. ``quantize_static``'s documentation recommends
``reduce_range=True`` on x86-64 without VNNI because of this saturation. Measured on an AVX2-only
AMD EPYC (2,000 held-out plates): 8-bit weights kept 0.986 of the FP32 accuracy (below MLPerf's
0.99), 7-bit weights 1.002, and U8U8 1.000. All three files are the same size (0.295-0.296 of
FP32). CPUs with VNNI or AMX accumulate in 32 bits without saturation and keep 8-bit weights
(0.998 there).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from .model import INPUT_SIZE, LPRNet

__all__ = ["export_onnx", "quantize_int8", "model_files", "file_bytes"]

INPUT_NAME, OUTPUT_NAME = "images", "logits"


def export_onnx(model: LPRNet, path: Path) -> list[Path]:
    """Export ``model`` (evaluated as is) to ``path``; returns the files written."""
    example = torch.zeros(1, 3, *INPUT_SIZE)
    with warnings.catch_warnings():
        # torch 2.13's exporter trips over its own deprecated pytree API; nothing for us to fix
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
        torch.onnx.export(
            model.eval(), (example,), str(path), dynamo=True, verbose=False,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
        )
    _drop_debug_metadata(path)
    return model_files(path)


def _drop_debug_metadata(path: Path) -> None:
    """Remove the exporter's per-node debug notes (source stack traces with this checkout's
    paths): the graph shrinks from ~71 to ~24 kB and is byte-identical on every checkout."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False)  # the weights stay in .onnx.data
    for node in graph.graph.node:
        node.ClearField("metadata_props")
    onnx.save(graph, str(path))


def quantize_int8(fp32_path: Path, path: Path, calibration: np.ndarray, batch_size: int = 50,
                  reduce_range: bool = False) -> list[Path]:
    """Static int8 QDQ model of ``fp32_path`` at ``path``, calibrated on float inputs ``calibration``;
    ``reduce_range`` gives 7-bit weights for CPUs without VNNI/AMX (see the module docstring)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Plates(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches: Iterator[np.ndarray] = (
                calibration[i:i + batch_size] for i in range(0, len(calibration), batch_size)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    import onnx

    graph = onnx.load(str(fp32_path), load_external_data=False).graph
    float_pools = [node.name for node in graph.node if node.op_type == "AveragePool"]
    quantize_static(
        str(fp32_path), str(path), Plates(),
        quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        per_channel=True, reduce_range=reduce_range, nodes_to_exclude=float_pools,
    )
    return model_files(path)


def model_files(path: Path) -> list[Path]:
    """A model's files on disk: the graph, and its external weights when there are any."""
    data = path.with_name(path.name + ".data")
    return [path, data] if data.exists() else [path]


def file_bytes(files: list[Path]) -> int:
    return sum(f.stat().st_size for f in files)
