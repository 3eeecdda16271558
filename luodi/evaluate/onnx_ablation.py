"""Ablation of ONNX-stored forests and RBF SVMs without onnxruntime: the same numbers, a fraction of the work.

A table app explains its random forest and SVM members by ablation: the record, and the record with one feature
set to its typical value, each predicted again (luodi/tasks/tabular/explaining.py). Through onnxruntime that is
every tree of every forest on every varied row (credit-risk: 5 x 500 trees on ~11.5 rows, about 3.4 ms of CPU
per record, half of explain). The variants differ from their record in one feature only, so here:

- **Forests** (`ForestAblation`, from the graph's TreeEnsembleClassifier / Regressor attributes): each tree is
  walked once on the record; a variant leaves the record's path only at a node that splits on its feature's
  columns and goes the other way there, and only then is the rest of its path walked. Every other tree gives the
  variant the record's leaf. The leaves reached are exactly onnxruntime's (float32 inputs and thresholds, the same
  comparison and missing-value rule); the records' sums are also added as onnxruntime adds them (float32, tree
  by tree: predict's numbers, bit for bit), and the variants' changes in float64.
- **RBF SVMs** (`SvmAblation`, from the SVMClassifier / SVMRegressor attributes and the scikit-learn calibration
  tail skl2onnx writes after it): the kernel rows of all inputs in one matrix product.

Both are built from the stored graph and checked against onnxruntime on random rows when built; a graph they do
not cover, or one that disagrees, answers None and the caller keeps onnxruntime. numba (a dependency of shap)
compiles the tree walk once per process (about 2 s), on purpose without its disk cache: those files are pickles,
and luodi never loads a pickle (tests/test_no_pickle.py). Import this module lazily.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

LEAF, LEQ, LT, GTE, GT, EQ, NEQ = range(7)
MODES = {b"LEAF": LEAF, b"BRANCH_LEQ": LEQ, b"BRANCH_LT": LT, b"BRANCH_GTE": GTE, b"BRANCH_GT": GT,
         b"BRANCH_EQ": EQ, b"BRANCH_NEQ": NEQ}
CHECK_ROWS, CHECK_TOL = 64, 1e-5


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


@njit(inline="always")
def _decide(x, thr, nd, simple, ext):
    """onnxruntime's branch rule at node nd: True = its "true" child. `simple`: every node is BRANCH_LEQ and
    missing values go false (x <= thr is False for NaN); else ext[nd] holds the node's mode and missing rule."""
    if simple:
        return x <= thr
    if x != x:
        return ext[nd, 1] != 0
    mode = ext[nd, 0]
    if mode == LEQ:
        return x <= thr
    if mode == LT:
        return x < thr
    if mode == GTE:
        return x >= thr
    if mode == GT:
        return x > thr
    if mode == EQ:
        return x == thr
    return x != thr


@njit
def _descend(nd, row, meta, thr, fbits, simple, ext):
    """The leaf (its row in the leaf table) that `row` reaches from node nd."""
    fmask = (1 << fbits) - 1
    while meta[nd] >= 0:
        m = meta[nd]
        nd = nd + 1 if _decide(row[m & fmask], thr[nd], nd, simple, ext) else nd + (m >> fbits)
    return -meta[nd] - 1


@njit
def _ablate(meta, thr, fbits, simple, ext, leafval, roots, x, v, var_rec, out_x, out_v, ort_x):
    """out_x[r] = sum over trees of the leaf values of record x[r]; out_v[i] the same for variant v[i] of
    record var_rec[i] (sorted), walking a variant only where it leaves its record's path. Nodes are depth
    first (a node's true child is the next node) and 8 bytes each: meta (a branch's column in the low `fbits`
    bits and its false child's distance above them; a leaf: -1 - its row in leafval) beside the float32
    threshold, so a visit touches one cache line and a walk down true children reads memory in order. ort_x
    gets the records' sums as onnxruntime adds them (float32, tree by tree): predict's numbers, bit for bit."""
    fmask = (1 << fbits) - 1
    n, d = x.shape
    m, kk = v.shape[0], leafval.shape[1]
    owner = np.full(d, -1, np.int64)
    leaf_of = np.full(m, -1, np.int64)
    moved = np.empty(max(m, 1), np.int64)
    start = 0
    for r in range(n):
        stop = start
        while stop < m and var_rec[stop] == r:
            stop += 1
        conflict = False
        for i in range(start, stop):
            for c in range(d):
                a, b = v[i, c], x[r, c]
                if a != b and not (a != a and b != b):
                    if owner[c] >= 0:
                        conflict = True  # two variants change one column: walk them in full below
                    owner[c] = i
        for t in range(roots.shape[0]):
            nd, k = roots[t], 0
            while meta[nd] >= 0:
                c, far = meta[nd] & fmask, nd + (meta[nd] >> fbits)
                go = _decide(x[r, c], thr[nd], nd, simple, ext)
                i = owner[c]
                if i >= 0 and not conflict and leaf_of[i] < 0:
                    if _decide(v[i, c], thr[nd], nd, simple, ext) != go:
                        leaf_of[i] = _descend(far if go else nd + 1, v[i], meta, thr, fbits, simple, ext)
                        moved[k] = i
                        k += 1
                nd = nd + 1 if go else far
            leaf = -meta[nd] - 1
            for q in range(kk):  # scalar loops: array expressions would allocate per tree
                out_x[r, q] += leafval[leaf, q]
                ort_x[r, q] += np.float32(leafval[leaf, q])
            for j in range(k):
                i = moved[j]
                for q in range(kk):
                    out_v[i, q] += leafval[leaf_of[i], q] - leafval[leaf, q]
                leaf_of[i] = -1
        for i in range(start, stop):
            for q in range(kk):
                out_v[i, q] = out_v[i, q] + out_x[r, q] if not conflict else 0.0
            if conflict:
                for t in range(roots.shape[0]):
                    leaf = _descend(roots[t], v[i], meta, thr, fbits, simple, ext)
                    for q in range(kk):
                        out_v[i, q] += leafval[leaf, q]
        for c in range(d):
            owner[c] = -1
        start = stop


class ForestAblation:
    """A stored TreeEnsembleClassifier / TreeEnsembleRegressor graph (one node, what skl2onnx writes for a
    random forest) as one packed node table, predicting records and their one-feature variants (see the module
    docstring). Outputs are OnnxMember.predict's: normalized class probabilities (n, k), or (n, 1) for a
    regressor."""

    def __init__(self, a: dict[str, Any], regression: bool):
        prefix = "target" if regression else "class"
        trees, ids = np.asarray(a["nodes_treeids"], np.int64), np.asarray(a["nodes_nodeids"], np.int64)
        span = int(ids.max()) + 1
        keys = trees * span + ids
        order = np.argsort(keys, kind="stable")  # tree by tree, node ids in order (scikit-learn's: depth first)
        sorted_keys = keys[order]

        def index(t: Any, i: Any) -> np.ndarray:  # (tree id, node id) -> position in the flat arrays
            return np.searchsorted(sorted_keys, np.asarray(t, np.int64) * span + np.asarray(i, np.int64))

        mode = np.array([MODES[m] for m in np.asarray(a["nodes_modes"], dtype=object)[order]], dtype=np.int8)
        tracks = np.asarray(a.get("nodes_missing_value_tracks_true") or [0] * len(order), dtype=np.int8)[order]
        t_ids, branch = trees[order], mode != LEAF
        leaf_row = np.cumsum(~branch) - 1  # each leaf's row in the leaf table
        here = np.arange(len(order))
        yes = index(t_ids, np.asarray(a["nodes_truenodeids"], np.int64)[order])
        far = index(t_ids, np.asarray(a["nodes_falsenodeids"], np.int64)[order]) - here
        feat = np.asarray(a["nodes_featureids"], np.int64)[order]
        self.fbits = max(1, int(feat[branch].max(initial=0)).bit_length())
        if np.any(yes[branch] != here[branch] + 1) or np.any(far[branch] <= 0):
            raise ValueError("nodes not depth first (true child next): this layout needs it")
        if int(far[branch].max(initial=0)) >= 1 << (31 - self.fbits):
            raise ValueError("a tree too large for the packed node layout")
        self.nodes = np.zeros((len(order), 2), np.int32)
        self.nodes[:, 0] = np.where(branch, (far << self.fbits) | feat, -1 - leaf_row)
        self.nodes[:, 1] = np.asarray(a["nodes_values"], dtype=np.float32)[order].view(np.int32)
        self.meta = self.nodes[:, 0]
        self.thr = self.nodes.view(np.float32)[:, 1]  # the thresholds, in place in the node rows
        self.simple = bool(np.all(mode[branch] == LEQ) and not tracks[branch].any())
        self.ext = np.stack([mode, tracks], 1)
        first = np.r_[True, t_ids[1:] != t_ids[:-1]]
        self.roots = np.nonzero(first)[0].astype(np.int64)
        if np.any(ids[order][self.roots] != 0):
            raise ValueError("a tree without node 0")
        labels = None if regression else (a.get("classlabels_int64s") or a.get("classlabels_strings"))
        self.k = int(a.get("n_targets", 1)) if regression else len(labels)
        cls = np.asarray(a[f"{prefix}_ids"], dtype=np.int64)
        leaves = index(a[f"{prefix}_treeids"], a[f"{prefix}_nodeids"])
        if np.any(branch[leaves]):
            raise ValueError("a weight on a branch node")
        values = np.zeros((int((~branch).sum()), max(self.k, int(cls.max()) + 1)), np.float64)
        np.add.at(values, (leaf_row[leaves], cls), np.asarray(a[f"{prefix}_weights"], dtype=np.float32))
        self.base = np.asarray(a.get("base_values") or [0.0] * self.k, dtype=np.float64)
        self.regression = regression
        self.average = regression and a.get("aggregate_function", b"SUM") == b"AVERAGE"
        # onnxruntime's binary case: one weight per leaf (column 0), the second class's probability
        self.binary_one = not regression and self.k == 2 and not values[:, 1].any()
        self.leafval = np.ascontiguousarray(values[:, :1] if self.binary_one else values[:, : self.k])
        if (not regression and self.base.any()) or a.get("post_transform", b"NONE") != b"NONE":
            raise ValueError("a base value or post transform this ablation does not replay")
        if regression and (self.k != 1 or a.get("aggregate_function", b"SUM") not in (b"SUM", b"AVERAGE")):
            raise ValueError("only single-target SUM / AVERAGE regressors")

    def _finish(self, s: np.ndarray) -> np.ndarray:
        """Summed leaf values -> OnnxMember.predict's output (in s's precision until the final float64)."""
        one = s.dtype.type(1)
        if self.regression:
            s = (s / s.dtype.type(len(self.roots)) if self.average else s) + self.base.astype(s.dtype)
            return s.astype(np.float64)
        if self.binary_one:
            s = np.hstack([one - s, s])
        s = s.astype(np.float64)
        return s / s.sum(1, keepdims=True)

    def predict_ablated(
        self, x: np.ndarray, v: np.ndarray, var_rec: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Outputs of the records x (n, d) and of their variants v (m, d) (variant i belongs to record
        var_rec[i], sorted; it differs from it in one feature's columns): (the records' as onnxruntime computes
        them, the records' and the variants' in float64 sums)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        v = np.ascontiguousarray(v, dtype=np.float32)
        out_x = np.zeros((len(x), self.leafval.shape[1]))
        ort_x = np.zeros((len(x), self.leafval.shape[1]), np.float32)
        out_v = np.zeros((len(v), self.leafval.shape[1]))
        var_rec = np.ascontiguousarray(var_rec, dtype=np.int64)
        tree = (self.meta, self.thr, self.fbits, self.simple, self.ext, self.leafval, self.roots)
        _ablate(*tree, x, v, var_rec, out_x, out_v, ort_x)
        return self._finish(ort_x), self._finish(out_x), self._finish(out_v)


class SvmAblation:
    """A stored RBF SVM (SVMClassifier + skl2onnx's sigmoid calibration tail, or SVMRegressor) in numpy: the
    kernel of every row against the support vectors in one matrix product (float64: as exact as onnxruntime's
    float32 or more)."""

    def __init__(self, graph: Any, regression: bool):
        from onnx import numpy_helper

        nodes = list(graph.node)
        svm = nodes[0]
        a = _attrs(svm)
        if a.get("kernel_type") != b"RBF" or a.get("post_transform", b"NONE") != b"NONE" or a.get("prob_a"):
            raise ValueError("only RBF kernels without a post transform")
        self.gamma = float(a["kernel_params"][0])
        self.coef = np.asarray(a["coefficients"], dtype=np.float64)
        self.rho = np.asarray(a["rho"], dtype=np.float64)
        n_sv = len(self.coef) if regression else int(sum(a["vectors_per_class"]))
        self.sv = np.asarray(a["support_vectors"], dtype=np.float32).astype(np.float64).reshape(n_sv, -1)
        self.sv_sq = (self.sv**2).sum(1)
        self.regression = regression
        if regression:
            tail = [n.op_type for n in nodes[1:]]
            if svm.op_type != "SVMRegressor" or tail not in ([], ["Cast"]) or len(self.rho) != 1 or a.get("one_class"):
                raise ValueError("only a plain SVMRegressor")
            return
        if svm.op_type != "SVMClassifier" or len(a.get("classlabels_ints", [])) != 2 or len(self.rho) != 1:
            raise ValueError("only binary SVM classifiers")
        init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        ops = [n.op_type for n in nodes[1:]]
        if ops[:9] != ["Cast", "Mul", "ArrayFeatureExtractor", "Mul", "Add", "Exp", "Add", "Div", "Sub"]:
            raise ValueError("not the sigmoid calibration tail skl2onnx writes")
        self.sign = float(init[nodes[2].input[1]])  # raw_scores * minus_one
        self.column = int(np.ravel(init[nodes[3].input[1]])[0])
        self.a = float(init[nodes[4].input[0]])
        self.b = float(init[nodes[5].input[1]])

    def decision(self, x: np.ndarray) -> np.ndarray:
        """The SVM's score per row: sum of coefficient x RBF kernel, plus rho (onnxruntime's sum)."""
        x = np.asarray(x, dtype=np.float32).astype(np.float64)
        d2 = (x**2).sum(1)[:, None] + self.sv_sq[None, :] - 2.0 * (x @ self.sv.T)
        return np.exp(-self.gamma * np.maximum(d2, 0.0)) @ self.coef + self.rho[0]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """OnnxMember.predict's numbers: (n, 2) probabilities, or (n, 1) predictions."""
        s = self.decision(x)
        if self.regression:
            return s[:, None]
        scores = np.stack([-s, s], 1) * self.sign  # onnxruntime's binary scores: [-score, score]
        p = 1.0 / (1.0 + np.exp(self.a * scores[:, self.column] + self.b))
        return np.stack([1.0 - p, p], 1)


def from_onnx(blob: bytes, session: Any, regression: bool) -> ForestAblation | SvmAblation | None:
    """The fast path of a stored forest / SVM graph, checked against its onnxruntime `session` on random rows;
    None when the graph is not one covered here or the check fails (the caller keeps onnxruntime)."""
    import onnx

    try:
        graph = onnx.load_from_string(blob).graph
        op = graph.node[0].op_type
        if op in ("TreeEnsembleClassifier", "TreeEnsembleRegressor") and len(graph.node) <= 2:
            fast: Any = ForestAblation(_attrs(graph.node[0]), regression)
        elif op in ("SVMClassifier", "SVMRegressor"):
            fast = SvmAblation(graph, regression)
        else:
            return None
        width = session.get_inputs()[0].shape[1]
        rng = np.random.default_rng(0)
        x = rng.normal(size=(CHECK_ROWS, width)).astype(np.float32)
        x[: CHECK_ROWS // 2] = (x[: CHECK_ROWS // 2] > 0.5).astype(np.float32)  # one-hot-like rows too
        outs = session.run(None, {session.get_inputs()[0].name: x})
        want = outs[0].reshape(len(x), 1) if regression else outs[1].astype(np.float64)
        if not regression:
            want = want / want.sum(1, keepdims=True)
        if isinstance(fast, ForestAblation):
            v = x[::-1].copy()
            _, _, got_v = fast.predict_ablated(x[:1], v[:3], np.zeros(3, np.int64))  # conflicting: full walks
            ok = np.allclose(got_v, want[::-1][:3], atol=CHECK_TOL)
            got = np.vstack([fast.predict_ablated(x[i : i + 1], x[:0], np.zeros(0, np.int64))[1]
                             for i in range(len(x))])
        else:
            got, ok = fast.predict(x), True
        if not ok or not np.allclose(got, want, atol=CHECK_TOL):
            return None
        return fast
    except (ValueError, KeyError, IndexError, TypeError):
        return None
