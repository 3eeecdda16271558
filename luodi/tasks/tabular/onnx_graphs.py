"""The tabular ensemble as one ONNX graph (`luodi optimize --method onnx`): every cross-fitted member's LightGBM
boosters (onnxmltools), MLP and linear model (built here from their weights) and forest / SVM (their stored
skl2onnx graphs) side by side in one onnxruntime session.

Why one graph: a single record of credit-risk otherwise pays LightGBM's and onnxruntime's per-call cost once per
booster and member; here it is one `session.run`. Each part keeps its own output (named m<j>.<part>.<i>.<name>),
so the weighted average, calibration and decisions stay the task's own numpy code, and the numbers are the
original members' to float32 rounding. Inputs are each member's matrices (m<j>.lgb / m<j>.dense / m<j>.coded):
the preprocessing stays in rows.py, which already builds them without pandas for single records.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

OPSET = 15  # ai.onnx opset of the graphs built here (MatMul, Add, Relu, Softmax, Cast, Mul, Concat)
PARTS = ("lightgbm", "mlp", "linear", "forest", "svm")


def lgb_graph(booster: Any, regression: bool) -> Any:
    """One LightGBM booster as ONNX (TreeEnsembleClassifier / Regressor) reading a float32 matrix "X"."""
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = onnxmltools.convert_lightgbm(
            booster, initial_types=[("X", FloatTensorType([None, booster.num_feature()]))], zipmap=False,
            target_opset=OPSET,
        )
    _keep_output(model, 0 if regression else 1)
    return model


def dense_graph(layers: list[tuple[np.ndarray, np.ndarray]], head: str, dtype: Any = np.float32,
                scale: tuple[float, float] | None = None) -> Any:
    """x @ W + b layers with ReLU between them (the MLP; one layer: the linear model) reading "X" (float32).
    head: softmax (class probabilities), binary (one logit z -> [1 - sigmoid(z), sigmoid(z)], as softmax over
    [0, z]) or none (a regression value, times / plus `scale` = (std, mean) when given). float64 `dtype`
    computes in double after casting the input, as the linear model's numpy code does."""
    from onnx import TensorProto, helper, numpy_helper

    elem = TensorProto.DOUBLE if dtype == np.float64 else TensorProto.FLOAT
    nodes, inits = [], []
    h = "X"
    if dtype == np.float64:
        nodes.append(helper.make_node("Cast", ["X"], ["X64"], to=elem))
        h = "X64"
    for i, (w, b) in enumerate(layers):
        w, b = np.asarray(w, dtype), np.asarray(b, dtype)
        if head == "binary" and i == len(layers) - 1:  # logit z -> [0, z]: softmax gives [1 - p, p]
            w = np.concatenate([np.zeros_like(w[:, :1]), w[:, :1]], 1)
            b = np.concatenate([np.zeros_like(b[:1]), b[:1]])
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(b, f"B{i}")]
        nodes += [helper.make_node("MatMul", [h, f"W{i}"], [f"M{i}"]),
                  helper.make_node("Add", [f"M{i}", f"B{i}"], [f"A{i}"])]
        h = f"A{i}"
        if i < len(layers) - 1:
            nodes.append(helper.make_node("Relu", [h], [f"R{i}"]))
            h = f"R{i}"
    if head in ("softmax", "binary"):
        nodes.append(helper.make_node("Softmax", [h], ["Y"], axis=-1))
    elif scale is not None:  # the MLP regressor's standardized target back in its units, in double
        inits += [numpy_helper.from_array(np.array([scale[0]]), "S"),
                  numpy_helper.from_array(np.array([scale[1]]), "C")]
        nodes += [helper.make_node("Cast", [h], ["H64"], to=TensorProto.DOUBLE),
                  helper.make_node("Mul", ["H64", "S"], ["HS"]), helper.make_node("Add", ["HS", "C"], ["Y"])]
        elem = TensorProto.DOUBLE
    else:
        nodes.append(helper.make_node("Identity", [h], ["Y"]))
    width = int(np.asarray(layers[0][0]).shape[0])
    graph = helper.make_graph(
        nodes, "dense", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, width])],
        [helper.make_tensor_value_info("Y", elem, [None, None])], inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)


def _keep_output(model: Any, index: int) -> None:
    """Only output `index` stays a graph output (the classifiers' label output is not read)."""
    keep = model.graph.output[index]
    del model.graph.output[:]
    model.graph.output.append(keep)


def merge(parts: list[tuple[str, str, Any]]) -> Any:
    """One model of `parts` = [(prefix, shared input, model)]: each model's nodes prefixed, its single input
    renamed to the shared input (members reading the same matrix read one input), every output kept."""
    import onnx
    from onnx import compose, helper

    nodes, inits, inputs, outputs, infos = [], [], {}, [], []
    opsets: dict[str, int] = {}
    ir = 8
    for prefix, shared, model in parts:
        model = compose.add_prefix(model, prefix)
        (inp,) = model.graph.input
        for node in model.graph.node:
            for i, name in enumerate(node.input):
                if name == inp.name:
                    node.input[i] = shared
        if shared not in inputs:
            renamed = onnx.ValueInfoProto()
            renamed.CopyFrom(inp)
            renamed.name = shared
            inputs[shared] = renamed
        nodes += model.graph.node
        inits += model.graph.initializer
        outputs += [o for o in model.graph.output if not o.name.endswith(".label")]
        infos += model.graph.value_info
        for op in model.opset_import:
            opsets[op.domain] = max(opsets.get(op.domain, 0), op.version)
        ir = max(ir, model.ir_version)
    graph = helper.make_graph(nodes, "luodi-tabular", list(inputs.values()), outputs, inits, value_info=infos)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(opsets.items())],
                              ir_version=ir, producer_name="luodi")
    onnx.checker.check_model(model)
    return model


def parameter_count(model: Any) -> int:
    """What an ONNX model computes with: its initializers' elements, tree ensembles' nodes and SVMs' support
    vectors and coefficients (the ai.onnx.ml operators keep them as attributes, not initializers)."""
    n = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    for node in model.graph.node:
        for a in node.attribute:
            if a.name in ("nodes_nodeids", "support_vectors", "coefficients"):
                n += len(a.ints) + len(a.floats)
    return n


class EnsembleSession:
    """The merged graph in one onnxruntime session: every member's part outputs from one call."""

    def __init__(self, blob: bytes, threads: int = 1):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = max(1, threads)
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        self.blob = blob
        self.session = ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"])
        self.feeds = [(i.name, int(i.name.split(".")[0][1:]), i.name.split(".")[1]) for i in self.session.get_inputs()]
        self.names = [o.name for o in self.session.get_outputs()]
        self.keys = [(int(n.split(".")[0][1:]), n.split(".")[1]) for n in self.names]  # (member, part)

    def run(self, mats: list[Callable[[str], np.ndarray]], regression: bool) -> list[dict[str, np.ndarray]]:
        """{part: output} of each member for its matrices `mats[j]`; boosters of one member averaged."""
        feeds = {name: np.ascontiguousarray(mats[j](key), dtype=np.float32) for name, j, key in self.feeds}
        out: list[dict[str, list[np.ndarray]]] = [{} for _ in mats]
        for (j, part), y in zip(self.keys, self.session.run(self.names, feeds), strict=True):
            y = np.asarray(y, dtype=np.float64)
            if regression:
                y = y.reshape(len(y), 1)
            elif part in ("lightgbm", "forest", "svm"):
                y = y / y.sum(1, keepdims=True)
            out[j].setdefault(part, []).append(y)
        return [{part: ys[0] if len(ys) == 1 else np.mean(ys, axis=0) for part, ys in d.items()} for d in out]
