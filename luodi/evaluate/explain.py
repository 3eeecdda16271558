"""Why a table app predicted what it did: each feature's effect on the prediction, by ablation.

For every feature, the record is predicted again with that feature set to a typical value (the training
median of a number or rank, the most common category) and the change is that feature's effect: how much its
actual value moved the predicted label's probability (or the predicted value) away from a typical applicant's.
It works for any model behind `predict` (the credit ensemble included), costs one extra prediction per feature
and record, and is what captum calls feature ablation, here on the whole pipeline instead of a torch module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Predict = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


def _score(out: dict[str, Any], label: Any) -> float:
    return float(out["value"]) if "value" in out else float(out["probabilities"][label])


def explain(
    predict: Predict, records: list[dict[str, Any]], typical: dict[str, Any], top: int | None = None
) -> list[dict[str, Any]]:
    """Predictions with an `explanation` each: the features sorted by the size of their effect (top `top`)."""
    feats = list(typical)
    variants = [dict(r, **{f: typical[f]}) for r in records for f in feats]
    outs = predict(list(records) + variants)
    base, rest = outs[: len(records)], outs[len(records) :]
    result = []
    for i, (rec, out) in enumerate(zip(records, base, strict=True)):
        label = out.get("label")
        own = _score(out, label)
        effects = []
        for j, f in enumerate(feats):
            if rec.get(f) == typical[f]:
                continue  # already typical: no effect by definition
            delta = own - _score(rest[i * len(feats) + j], label)
            effects.append({"feature": f, "value": rec.get(f), "typical": typical[f], "effect": round(delta, 6)})
        effects.sort(key=lambda e: -abs(e["effect"]))
        target = "value" if "value" in out else f"probability of '{label}'"
        result.append({**out, "explanation": {"target": target, "effects": effects[:top] if top else effects}})
    return result
