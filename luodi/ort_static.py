"""Static int8 quantization (QDQ, per-channel weights) of ONNX graphs over dense inputs, such as image CNNs.

Dynamic quantization (luodi.ort) only covers MatMul / Gemm and computes activation scales per call; a CNN's cost is
in its Conv nodes, which need activation ranges fixed ahead of time: those come from calibration rows run through
the float32 graph (`ArrayReader`). The caller checks the quality bound and batch-1 speed on the result: int8 convs
can lose accuracy on small models and are not faster on every CPU.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from luodi.atomic import atomic_path

STATIC_OPS = ("Conv", "Gemm", "MatMul", "MaxPool", "GlobalAveragePool", "Relu", "Add", "Flatten")


def _reader_class() -> type:
    from onnxruntime.quantization import CalibrationDataReader

    class ArrayReader(CalibrationDataReader):
        """Feeds `x` to the graph's input `name` in batches, for the calibrator's activation ranges."""

        def __init__(self, name: str, x: np.ndarray, batch: int = 32):
            self.name, self.x, self.batch, self.start = name, np.asarray(x, np.float32), batch, 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.start >= len(self.x):
                return None
            chunk = self.x[self.start : self.start + self.batch]
            self.start += self.batch
            return {self.name: chunk}

        def rewind(self) -> None:
            self.start = 0

    return ArrayReader


def array_reader(name: str, x: np.ndarray, batch: int = 32) -> Any:
    """A CalibrationDataReader over the rows of `x` (onnxruntime is imported only when one is made)."""
    return _reader_class()(name, x, batch)


def quantizable_nodes(path: str | Path, ops: tuple[str, ...] = STATIC_OPS) -> list[str]:
    """Names of the graph's nodes of the types `ops` (those static quantization turns into int8 kernels), in
    graph order: the names `nodes_to_exclude` takes."""
    import onnx

    return [n.name for n in onnx.load(str(path), load_external_data=False).graph.node if n.op_type in ops]


def quantize_static_int8(
    src: Path, dst: Path, input_name: str, x: np.ndarray, exclude: list[str] | None = None
) -> None:
    """QDQ int8 of `src` into `dst`: per-channel int8 weights, int8 activations calibrated (min / max) on `x`;
    the nodes in `exclude` stay float32. The graph is pre-processed first (shape inference, fusions) as
    onnxruntime advises; where that fails the graph is quantized as it is."""
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer's advice and notes: the caller reports what matters
    try:
        with tempfile.TemporaryDirectory(prefix="luodi-quant-") as tmp:
            pre = Path(tmp) / "pre.onnx"
            try:
                quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            except Exception:  # noqa: BLE001 - pre-processing is an optimization only
                pre = Path(src)
            with atomic_path(dst, suffix=".onnx") as out:
                quantize_static(
                    str(pre), str(out), array_reader(input_name, x), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=list(STATIC_OPS), nodes_to_exclude=list(exclude or []),
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
                )
    finally:
        root.setLevel(level)


def batch1_ms(sess: Any, input_name: str, x: np.ndarray, rows: int = 64) -> float:
    """Median milliseconds of one row through `sess` (after a warm-up): the latency int8 must improve."""
    sample = np.asarray(x[:rows], np.float32)
    for row in sample[:8]:
        sess.run(None, {input_name: row[None]})
    times = []
    for row in sample:
        t0 = time.perf_counter()
        sess.run(None, {input_name: row[None]})
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)
