"""Why the tabular model predicted what it did: exact TreeSHAP for its LightGBM members, combined with the
other members' ablation effects as the ensemble weights them.

A member's effects are in the units the task predicts in (the predicted label's probability, a regression's
value): the LightGBM boosters' SHAP values scaled onto their probability (luodi.evaluate.attributions), the
MLP / linear / forest / SVM part's effects by ablation against a typical record (luodi.evaluate.explain: the
ONNX-stored forest keeps no tree statistics TreeSHAP could read). Their weighted sum is mapped through the
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
            out = self._raw_proba(rows, only=rest)
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
