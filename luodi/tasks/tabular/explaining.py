"""Why the tabular model predicted what it did: exact TreeSHAP for its LightGBM members, combined with the
other members' ablation effects as the ensemble weights them.

A member's effects are in the units the task predicts in (the predicted label's probability, a regression's
value): the LightGBM boosters' SHAP values scaled onto their probability (luodi.evaluate.attributions), the
MLP / linear / forest / SVM part's effects by ablation against a typical record (luodi.evaluate.explain: the
ONNX-stored forest keeps no tree statistics TreeSHAP could read). The forests and SVMs are not run again on
each ablated row: luodi.evaluate.onnx_ablation replays their stored graphs, walking a variant down a tree
only where it leaves its record's path (the same leaves, so the same effects; the records' own outputs stay
onnxruntime's, so explain answers what predict does). Their weighted sum is mapped through the
calibrator (the chord between the record's uncalibrated probability and the same minus the effects), so
`base` + the sum of the effects is the served probability. With LightGBM alone the effects are exact SHAP
values and `base` is the model's average prediction; models without LightGBM keep pure ablation. `method`
says which: shap | shap+ablation (ablation answers have none, as before). Each effect also names the typical
record's value of its feature (the ablation's reference; context for a SHAP value), as ablation answers do.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from luodi.data.tabular import Preprocessor
from luodi.evaluate.attributions import probability_shap
from luodi.evaluate.calibration import apply_calibrator
from luodi.evaluate.explain import typical_record
from luodi.options.tabular import TabularOptions
from luodi.tasks.tabular.rows import PandasRows
from luodi.tasks.tabular.sklearn_members import OnnxBatch


class Explaining:
    """`explain` for TabularTask (its state declared here for the reader)."""

    opts: TabularOptions
    prep: Preprocessor
    objective: str
    classes: list[str]
    positive: int
    weights: dict[str, float]
    calibrator: dict[str, Any] | None
    members: list[Any]
    ordinal: dict[str, list[str]]
    ensemble: Any
    # forests / SVMs ablated by luodi.evaluate.onnx_ablation (False: through onnxruntime, the previous path, which
    # gives the same numbers to float rounding; bench/explain.py and tests/test_explain.py compare the two)
    fast_ablation: bool = True

    def _tree_effects(self, rows: Any, n: int, exact: bool) -> tuple[np.ndarray, np.ndarray]:
        """The weighted LightGBM part's SHAP effects (n, K, f) of the first n of the encoded `rows`, and its
        probabilities (n, K), averaged over cross-fitted members like predictions: predict's own numbers when
        `exact` (LightGBM alone answers exactly as predict does), else base + effects (the same to float
        rounding, without a second pass through the trees)."""
        w = self.weights["lightgbm"]
        effects, probs = [], []
        for j, m in enumerate(self.members or [self]):
            x = rows.matrices(j)("lgb")[:n]
            boosters = [m.booster, *m.more_boosters]
            phi, base = probability_shap(boosters, x, m.objective, len(m.classes), m.opts.threads)
            effects.append(phi)
            probs.append(w * (m._lgb_proba(x) if exact else base + phi.sum(-1)))
        return w * np.mean(effects, axis=0), np.mean(probs, axis=0)

    def _ablation_rows(
        self, records: list[dict[str, Any]], typical: dict[str, Any], rec: np.ndarray, feat: np.ndarray
    ) -> Any:
        """The records, then record rec[i] with feature feat[i] alone set to its typical value, encoded for
        the members once: directly (rows.RowCoder) when it converts every value, else through pandas."""
        rows = self._rows(records)
        if not len(rec):
            return rows
        reference = None if isinstance(rows, PandasRows) else self._coder.parse([typical])
        if reference is None:  # values the direct coder leaves to pandas: the variants as records
            feats = self.prep.features
            variants = [dict(records[i], **{feats[f]: typical[feats[f]]}) for i, f in zip(rec, feat, strict=True)]
            return PandasRows(self, self._frame(list(records) + variants))
        num, cat = self._coder.variants((rows.num, rows.cat), reference, rec, feat)
        return self._coder.matrices(np.vstack([rows.num, num]), np.vstack([rows.cat, cat]))

    def _ablation_kernels(self) -> list[dict[str, Any]] | None:
        """Each cross-fitted member's weighted forest / SVM as its onnx_ablation replay, built once per loaded
        graph and checked against onnxruntime; None when one of them is a graph it does not cover (onnxruntime
        then runs them all, as before)."""
        members = self.members or [self]
        stored = [[(k, m.sk[k]) for k in m.sk if m.weights.get(k, 0) > 0] for m in members]
        key = [sk for s in stored for _, sk in s]
        cache = getattr(self, "_ablators", None)
        if cache is None or len(cache[0]) != len(key) or any(a is not b for a, b in zip(cache[0], key, strict=True)):
            from luodi.evaluate.onnx_ablation import from_onnx

            reg = self.objective == "regression"
            kernels = [{k: from_onnx(sk.blob, sk.session, reg) for k, sk in s} for s in stored]
            ok = all(f is not None for ks in kernels for f in ks.values())
            self._ablators = cache = (key, kernels if ok else None, self._svm_batch(stored) if ok else None)
        return cache[1]

    def _svm_batch(self, stored: list[list[tuple[str, Any]]]) -> Any:
        """Every member's SVM as one onnxruntime session (sklearn_members.OnnxBatch): the records' own SVM
        outputs in one call; None with one member or graphs it cannot merge (then one call per member)."""
        svms = [sk for s in stored for k, sk in s if k == "svm"]
        if len(svms) < 2:
            return None
        try:
            return OnnxBatch(svms, self.opts.threads)
        except Exception:  # as TabularTask._onnx_outputs: graphs onnx.compose cannot put side by side
            return None

    def _ablated_proba(self, rows: Any, n: int, rec: np.ndarray, only: tuple[str, ...]) -> np.ndarray:
        """= self._raw_proba(rows, only) for the n records followed by their one-feature variants (variant i
        of record rec[i]). The records' own forest / SVM outputs are predict's, bit for bit (a forest's sums
        added as onnxruntime adds them; an SVM through onnxruntime), so explain answers exactly what predict
        does; each variant's is that plus its change, replayed in float64 by luodi.evaluate.onnx_ablation (a
        forest walks a variant only where it leaves its record's path; an SVM is one kernel product). Without
        a replay for every graph: onnxruntime on every row, as before."""
        fast = self.fast_ablation and self.ensemble is None  # an ONNX run: its one session, as predict
        kernels = self._ablation_kernels() if fast else None
        if kernels is None:
            return self._raw_proba(rows, only=only)
        members = self.members or [self]
        mats = [rows.matrices(j) for j in range(len(members))]
        reg = self.objective == "regression"
        svm_batch = self._ablators[2]
        if svm_batch is not None:  # the records' own SVM outputs, every member in one onnxruntime call
            svm_own = iter(svm_batch.predict([mats[j](m._matrix_of("svm"))[:n] for j, m in enumerate(members)], reg))
        outs = []
        for j, m in enumerate(members):
            parts = {}
            for kind, replay in kernels[j].items():
                x = mats[j](m._matrix_of(kind))
                if hasattr(replay, "predict_ablated"):  # a forest: its records' sums as onnxruntime adds them
                    own, mine, varied = replay.predict_ablated(x[:n], x[n:], rec)
                else:  # an SVM: the records through onnxruntime, the variants' change replayed
                    own = next(svm_own) if svm_batch is not None else m.sk[kind].predict(x[:n], reg)
                    both = replay.predict(x)
                    mine, varied = both[:n], both[n:]
                parts[kind] = np.vstack([own, own[rec] + (varied - mine[rec])])
            outs.append(m._member_proba(mats[j], only, parts))
        return np.mean(outs, axis=0)

    def _calibrated(self, raw: np.ndarray, effects: np.ndarray) -> np.ndarray:
        """Effects on the uncalibrated probabilities -> on the calibrated ones (binary with a calibrator)."""
        if self.objective != "binary" or not self.calibrator:
            return effects
        pos = self.positive
        p = raw[:, pos]
        ref = np.clip(p - effects[:, pos].sum(-1), 1e-6, 1 - 1e-6)
        cp, cref = apply_calibrator(p, self.calibrator), apply_calibrator(ref, self.calibrator)
        eps = 1e-4
        slope = (apply_calibrator(np.clip(p + eps, 0, 1), self.calibrator) - cp) / eps
        gap = p - ref
        scale = np.where(np.abs(gap) > 1e-9, (cp - cref) / np.where(np.abs(gap) > 1e-9, gap, 1.0), slope)
        out = np.empty_like(effects)
        out[:, pos] = effects[:, pos] * scale[:, None]
        out[:, 1 - pos] = -out[:, pos]
        return out

    def explain(self, records: list[dict[str, Any]], top: int | None = None) -> list[dict[str, Any]]:
        """Predictions with an `explanation` each: target, method, base (the reference prediction) and the
        features sorted by the size of their effect (top `top`)."""
        if self.weights.get("lightgbm", 0.0) <= 0:
            return super().explain(records, top)  # no trees to read: ablation (TableInputs)
        self._check_records(records)
        if not records:
            return []
        n, feats = len(records), self.prep.features
        typical = typical_record(self.prep, self.ordinal or {})
        rest = tuple(m for m, w in self.weights.items() if w > 0 and m != "lightgbm")
        # ablation of the other members: only where a feature differs from typical (elsewhere its effect is 0)
        same = np.array([[r.get(f) == typical[f] for f in feats] for r in records], dtype=bool)
        rec, feat = np.nonzero(~same) if rest else (np.zeros(0, np.intp), np.zeros(0, np.intp))
        rows = self._ablation_rows(records, typical, rec, feat)  # one encoding for every member
        # raw: the weighted LightGBM part of the uncalibrated prediction
        effects, raw = self._tree_effects(rows, n, exact=not rest)
        if rest:  # one batch: the records and their ablated variants, through the other members only
            out = self._ablated_proba(rows, n, rec, rest)
            own = out[:n]
            deltas = np.zeros((n, len(feats), out.shape[1]))
            deltas[rec, feat] = own[rec] - out[n:]
            effects = effects + deltas.transpose(0, 2, 1)
            raw = raw + own
        outs = self._outputs(rows, self._calibrate(raw), records)  # what predict answers, from the same pass
        effects = self._calibrated(raw, effects)
        feats = self.prep.features
        method = "shap+ablation" if rest else "shap"
        result = []
        for i, (rec, out) in enumerate(zip(records, outs, strict=True)):
            k = 0 if self.objective == "regression" else self.classes.index(out["label"])
            served = out["value"] if self.objective == "regression" else out["probabilities"][out["label"]]
            eff = effects[i, k]
            order = [j for j in np.argsort(-np.abs(eff), kind="stable") if round(float(eff[j]), 6) != 0.0]
            rows = [
                {"feature": f, "value": rec.get(f), "typical": typical[f], "effect": round(float(eff[j]), 6)}
                for j in order
                for f in [feats[j]]
            ]
            target = "value" if self.objective == "regression" else f"probability of '{out['label']}'"
            base = round(float(served - eff.sum()), 6)
            explanation = {"target": target, "method": method, "base": base, "effects": rows[:top] if top else rows}
            result.append({**out, "explanation": explanation})
        return result
