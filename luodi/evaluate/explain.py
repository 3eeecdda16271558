"""Why a table app predicted what it did: each feature's effect on the prediction, by ablation.

For every feature, the record is predicted again with that feature set to a typical value (the training
median of a number or rank, the most common category) and the change is that feature's effect: how much its
actual value moved the predicted label's probability (a regression's value, an anomaly score) away from a
typical record's.
It works for any model behind `predict` (the credit ensemble included), costs one extra prediction per feature
and record (for the features whose value is not already the typical one), and is what captum calls feature
ablation, here on the whole pipeline instead of a torch module.
Table apps with LightGBM members explain those exactly (TreeSHAP, luodi/evaluate/attributions.py) and ablate
only the other members (the deltas of `ablation_deltas`, computed there on encoded rows and only for features
that differ from typical); anomaly apps and models without trees use `explain` here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

Predict = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


def typical_record(prep: Any, ordinal: dict[str, list[str]]) -> dict[str, Any]:
    """A table app's typical record from its fitted preprocessor: training medians of numbers and of ordered
    ranks (as their category), the most common category of the others."""
    out: dict[str, Any] = {}
    for c in prep.features:
        if c in ordinal:
            order = ordinal[c]
            out[c] = order[min(len(order) - 1, max(0, int(round(prep.medians.get(c, 0.0)))))]
        elif c in prep.numeric:
            out[c] = prep.medians.get(c)
        else:
            out[c] = (prep.categories.get(c) or [None])[0]
    return out


def _target(out: dict[str, Any]) -> tuple[str, str | None]:
    """(the output field an effect is measured on, the label whose probability it is)."""
    for key in ("value", "anomaly_score"):
        if key in out:
            return key, None
    return "probabilities", out["label"]


def _score(out: dict[str, Any], key: str, label: str | None) -> float:
    return float(out[key][label] if label is not None else out[key])


def ablation_deltas(
    score: Callable[[list[dict[str, Any]]], np.ndarray], records: list[dict[str, Any]], typical: dict[str, Any]
) -> np.ndarray:
    """(n, f, k): how much each record's k scores (`score` of records, (n, k)) move away from their value when
    feature f alone takes its typical value; 0 where the record already has it. One batch of n * (f + 1) rows."""
    feats = list(typical)
    variants = [dict(r, **{f: typical[f]}) for r in records for f in feats]
    outs = np.asarray(score(list(records) + variants), dtype=np.float64)
    own, rest = outs[: len(records)], outs[len(records) :].reshape(len(records), len(feats), -1)
    same = np.array([[r.get(f) == typical[f] for f in feats] for r in records], dtype=bool)
    return np.where(same[..., None], 0.0, own[:, None, :] - rest)


def explain(
    predict: Predict, records: list[dict[str, Any]], typical: dict[str, Any], top: int | None = None
) -> list[dict[str, Any]]:
    """Predictions with an `explanation` each: the features sorted by the size of their effect (top `top`)."""
    feats = list(typical)
    varied = [(i, f) for i, r in enumerate(records) for f in feats if r.get(f) != typical[f]]  # typical: no effect
    outs = predict(list(records) + [dict(records[i], **{f: typical[f]}) for i, f in varied])
    base, moved = outs[: len(records)], dict(zip(varied, outs[len(records) :], strict=True))
    result = []
    for i, (rec, out) in enumerate(zip(records, base, strict=True)):
        key, label = _target(out)
        own = _score(out, key, label)
        effects = []
        for f in feats:
            if (i, f) not in moved:
                continue  # already typical: no effect by definition
            delta = own - _score(moved[i, f], key, label)
            effects.append({"feature": f, "value": rec.get(f), "typical": typical[f], "effect": round(delta, 6)})
        effects.sort(key=lambda e: -abs(e["effect"]))
        target = f"probability of '{label}'" if label is not None else key
        result.append({**out, "explanation": {"target": target, "effects": effects[:top] if top else effects}})
    return result


def global_importance(explained: list[dict[str, Any]], key: str = "feature") -> list[dict[str, Any]]:
    """Global importance from per-prediction explanations: each feature's (token's) mean |effect| over the
    explained predictions (0 where it had none), with how many it appeared in, sorted."""
    total: dict[str, float] = {}
    seen: dict[str, int] = {}
    for out in explained:
        for e in out["explanation"]["effects"]:
            total[e[key]] = total.get(e[key], 0.0) + abs(float(e["effect"]))
            seen[e[key]] = seen.get(e[key], 0) + 1
    n = max(1, len(explained))
    rows = [{key: f, "mean_abs_effect": round(v / n, 6), "count": seen[f]} for f, v in total.items()]
    return sorted(rows, key=lambda r: -r["mean_abs_effect"])


def permutation_importance(
    score: Callable[[Any], float], X: Any, y: Any, metric: str, repeats: int = 5, seed: int = 0
) -> list[dict[str, Any]]:
    """Global importance: how much `metric` (higher is better; `score(X)` computes it against y) drops when
    one column of X is shuffled (scikit-learn's permutation_importance), sorted, mean and std over repeats."""
    from sklearn.inspection import permutation_importance as sk_permutation_importance

    class _Fitted:  # scikit-learn only needs something to hand to the scorer
        def fit(self, *_: Any) -> _Fitted:
            return self

    res = sk_permutation_importance(
        _Fitted(), X, y, scoring=lambda _est, Xp, _y: score(Xp), n_repeats=repeats, random_state=seed
    )
    rows = [
        {"feature": str(c), "importance": float(m), "std": float(sd), "metric": metric}
        for c, m, sd in zip(X.columns, res.importances_mean, res.importances_std, strict=True)
    ]
    return sorted(rows, key=lambda r: -r["importance"])
