"""ONNX Runtime sessions and int8 quantization for every task family that runs a model as ONNX.

int8 is not free: quantizing MiniLM-class encoders can cost accuracy, and on some CPUs int8 kernels are slower
than float32 (onnxruntime issues #9599, #20052). `quantize_int8` therefore measures: it quantizes every
weight of a MatMul / Gather, and while the caller's quality check says the bound is broken it leaves whole roles
(attention q/k/v, feed-forward out, ...) in float32, the most sensitive first; the caller then keeps int8 only
where it is measured faster.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from luodi import crypto
from luodi.atomic import atomic_path

QUANTIZED_OPS = ("MatMul", "Gather", "Gemm")
# what a weight does in a transformer, from the node names torch.onnx.export gives (BERT-style and decoder models);
# the float32 fallback works by role: outliers concentrate in some roles (feed-forward output) across all layers
ROLES = (
    ("attention q/k/v", re.compile(r"(query|key|value|q_proj|k_proj|v_proj)")),
    ("attention output", re.compile(r"(attention/output|o_proj)")),
    ("feed-forward in", re.compile(r"(intermediate|up_proj|gate_proj)")),
    ("feed-forward out", re.compile(r"(/output/dense|down_proj)")),
    ("embeddings", re.compile(r"(embed|Gather)")),
)


def session(model: str | Path | bytes, threads: int | None = None) -> Any:
    """A CPU InferenceSession with `threads` intra-op threads (None: one per core) and full graph optimization."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or os.cpu_count() or 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # idle pool threads sleep instead of spinning: a spinning pool burns the cores that the Python around each
    # batch, other requests and other processes need (the NER under PII detection: 4.8 instead of 7.1 CPU-seconds
    # per 1,000 sentences on 2 busy cores, and less wall time too)
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    src = model if isinstance(model, bytes) else str(model)
    if isinstance(src, str) and crypto.is_sealed(src):  # a run's graph, encrypted at rest
        src = crypto.read_bytes(src)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


class SizedSession:
    """One graph, two sessions: a single-thread one for a few rows and a `threads` one for batches. A single record
    runs faster on one thread (no hand-off between threads, and no waiting for a core another request holds):
    MiniLM int8 at batch 1 took 1.3 ms on one thread and 2.8 ms on two with the second core busy."""

    SMALL = 4  # rows or fewer: the single-thread session

    def __init__(self, model: str | Path | bytes, threads: int | None = None):
        self.model, self.threads = model, threads or os.cpu_count() or 1
        self.small = session(model, 1)
        self.large = None

    def get_outputs(self) -> list[Any]:
        return self.small.get_outputs()

    def run(self, outputs: list[str] | None, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        rows = len(next(iter(feed.values())))
        if rows <= self.SMALL or self.threads == 1:
            return self.small.run(outputs, feed)
        if self.large is None:
            self.large = session(self.model, self.threads)
        return self.large.run(outputs, feed)


TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def run_tokenized(session: Any, encodings: list[Any], outputs: list[str], batch_size: int = 64) -> list[np.ndarray]:
    """Run a graph over `tokenizers` encodings in batches of similar lengths (little padding); each output comes
    back in the encodings' order. The one padded-batch loop of the text graphs (classifier heads, embeddings)."""
    order = np.argsort([len(e.ids) for e in encodings], kind="stable")
    out: list[np.ndarray] | None = None
    for start in range(0, len(encodings), batch_size):
        idx = order[start : start + batch_size]
        width = max(len(encodings[i].ids) for i in idx)
        feed = {k: np.zeros((len(idx), width), np.int64) for k in TOKEN_INPUTS}
        for row, i in enumerate(idx):
            e, n = encodings[i], len(encodings[i].ids)
            feed["input_ids"][row, :n] = e.ids
            feed["attention_mask"][row, :n] = e.attention_mask
            feed["token_type_ids"][row, :n] = e.type_ids
        values = session.run(outputs, feed)
        if out is None:
            out = [np.zeros((len(encodings), *v.shape[1:]), np.float32) for v in values]
        for whole, v in zip(out, values, strict=True):
            whole[idx] = v
    return out or []


def parameter_count(path: str | Path) -> int:
    """Elements in the model's initializers (its weights), whatever their type."""
    import onnx

    model = onnx.load_from_string(crypto.read_bytes(path))
    return int(sum(int(np.prod(t.dims)) for t in model.graph.initializer))


def fold_weight_identities(path: str | Path) -> None:
    """Feed weights straight to their consumers: torch.onnx.export shares a tensor used twice (two encoders with
    the same frozen layers) through Identity nodes, and the quantizer only quantizes weights it sees as
    initializers, so it would leave those in float32 beside a quantized copy."""
    import onnx

    model = onnx.load_from_string(crypto.read_bytes(path))
    graph = model.graph
    weights = {t.name for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    alias = {n.output[0]: n.input[0] for n in graph.node
             if n.op_type == "Identity" and n.input[0] in weights and n.output[0] not in outputs}
    if not alias:
        return
    keep = [n for n in graph.node if not (n.op_type == "Identity" and n.output[0] in alias)]
    for node in keep:
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = alias[name]
    del graph.node[:]
    graph.node.extend(keep)
    with atomic_path(path, suffix=".onnx") as tmp:
        onnx.save(model, str(tmp))


def node_groups(path: str | Path) -> dict[str, list[str]]:
    """The quantizable nodes (those with a weight) grouped by role ('feed-forward out'; the rest: 'other')."""
    import onnx

    graph = onnx.load_from_string(crypto.read_bytes(path)).graph
    weights = {t.name for t in graph.initializer}
    groups: dict[str, list[str]] = {}
    for node in graph.node:
        if node.op_type in QUANTIZED_OPS and any(i in weights for i in node.input):
            role = next((name for name, pattern in ROLES if pattern.search(node.name)), "other")
            groups.setdefault(role, []).append(node.name)
    return groups


def _quantize(src: Path, dst: Path, exclude: list[str]) -> None:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process: these graphs quantize well as they are
    try:
        with atomic_path(dst, suffix=".onnx") as tmp:
            quantize_dynamic(
                str(crypto.plain_handle(src)), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                nodes_to_exclude=exclude, op_types_to_quantize=list(QUANTIZED_OPS),
            )
    finally:
        root.setLevel(level)


def quantize_int8(
    src: Path,
    dst: Path,
    quality_drop: Callable[[Path], float],
    max_drop: float,
    say: Callable[[str], None] = lambda m: None,
) -> dict[str, Any]:
    """Dynamic int8 (per-channel weights) of `src` into `dst`, with roles left in float32 until
    `quality_drop(candidate) <= max_drop`. Returns {"float32_groups": [...], "quality_drop": d, "met": bool}."""
    groups = node_groups(src)
    if not groups:
        raise ValueError(f"{src} has no MatMul / Gather / Gemm node to quantize")
    _quantize(src, dst, [])
    drop = quality_drop(dst)
    say(f"int8 everywhere: quality drop {drop:.4f} (bound {max_drop})")
    kept: list[str] = []
    if drop > max_drop and len(groups) > 1:
        sensitivity = {}
        for name in groups:  # quantize one group alone: how much does it cost?
            others = [n for g, ns in groups.items() if g != name for n in ns]
            _quantize(src, dst, others)
            sensitivity[name] = quality_drop(dst)
        for name in sorted(groups, key=lambda g: -sensitivity[g]):
            kept.append(name)
            if len(kept) == len(groups):
                break
            _quantize(src, dst, [n for g in kept for n in groups[g]])
            drop = quality_drop(dst)
            say(f"float32 for {', '.join(kept)}: quality drop {drop:.4f}")
            if drop <= max_drop:
                break
        if len(kept) == len(groups):  # nothing quantized meets the bound: the float32 model itself
            drop = 0.0
    return {"float32_groups": kept, "quantized_groups": [g for g in groups if g not in kept],
            "quality_drop": round(float(drop), 6), "met": drop <= max_drop}


def int8_if_faster(
    fp32: Path,
    target: Path,
    swap: Callable[[Path], None],
    score: Callable[[], float],
    batch1_ms: Callable[[Path], float],
    opts: Any,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """`quantize_int8` of fp32 into target, its quality drop measured by `score` with each candidate graph put in
    place by `swap`; then int8 is kept only where `batch1_ms` finds it faster (opts.require_faster). Otherwise the
    result says "kept", target is removed and the float32 graph swapped back."""
    base = score()

    def drop(candidate: Path) -> float:
        swap(candidate)
        return base - score()

    info = quantize_int8(fp32, target, drop, opts.max_quality_drop, say)
    ms32, ms8 = batch1_ms(fp32), batch1_ms(target)
    info["batch1_ms"] = {"float32": round(ms32, 3), "int8": round(ms8, 3)}
    if opts.require_faster and ms8 >= ms32:
        say(f"int8 is not faster here ({ms8:.2f} ms vs {ms32:.2f} ms float32 at batch 1): float32 kept")
        info["kept"] = "float32 (int8 measured slower at batch 1)"
        target.unlink()
        swap(fp32)
    return info


def to_float16(src: Path, dst: Path) -> None:
    """Weights and activations in float16, inputs and outputs kept float32 (onnxconverter-common)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load_from_string(crypto.read_bytes(src)), keep_io_types=True)
    with atomic_path(dst, suffix=".onnx") as tmp:
        onnx.save(model, str(tmp))
