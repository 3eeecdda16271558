"""report.html: metrics, training curves, confusion matrix, ROC / PR / calibration curves, per-class table.

Plots are matplotlib PNGs embedded as base64, so the report is one self-contained file.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np

from luodi.evaluate.metrics import per_class_table


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def training_curves(history: list[dict[str, Any]]) -> str | None:
    keys = sorted(
        {
            k
            for h in history
            for k, v in h.items()
            if isinstance(v, int | float) and k not in ("epoch", "iteration")
        }
    )
    if not history or not keys:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for k in keys:
        pts = [(i + 1, h[k]) for i, h in enumerate(history) if k in h]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=k)
    ax.set_xlabel("checkpoint (epoch)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def confusion_plot(y: np.ndarray, pred: np.ndarray, labels: list[str]) -> str:
    from sklearn.metrics import confusion_matrix

    plt = _plt()
    k = len(labels)
    cm = confusion_matrix(y, pred, labels=list(range(k)))
    size = min(12, 2.5 + 0.4 * k)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    if k <= 30:
        ax.set_xticks(range(k), labels, rotation=90 if k > 4 else 0, fontsize=7)
        ax.set_yticks(range(k), labels, fontsize=7)
        for i in range(k):
            for j in range(k):
                ax.text(
                    j,
                    i,
                    cm[i, j],
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if cm[i, j] > cm.max() / 2 else "black",
                )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    return _png(fig)


def binary_curves(y: np.ndarray, score: np.ndarray) -> list[str]:
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    plt = _plt()
    out = []
    fpr, tpr, _ = roc_curve(y, score)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(fpr, tpr, label=f"AUC {auc(fpr, tpr):.4f}")
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax.legend()
    out.append(_png(fig))
    prec, rec, _ = precision_recall_curve(y, score)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(rec, prec)
    ax.set(xlabel="recall", ylabel="precision", title="precision-recall")
    out.append(_png(fig))
    frac, mean = calibration_curve(y, score, n_bins=10, strategy="quantile")
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(mean, frac, marker="o")
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.set(xlabel="predicted probability", ylabel="observed frequency", title="calibration")
    out.append(_png(fig))
    return out


def render_report(
    title: str,
    metrics: dict[str, Any],
    material: dict[str, Any] | None = None,
    history: list[dict[str, Any]] | None = None,
    info: dict[str, Any] | None = None,
    sections: list[str] | None = None,
) -> str:
    """A self-contained HTML page (`sections`: HTML blocks put after the metrics, e.g. luodi optimize's table)."""
    esc = html.escape
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>"
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}"
        "img{margin:6px;border:1px solid #eee}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
    ]
    if info:
        parts.append(
            "<table>"
            + "".join(f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>" for k, v in info.items())
            + "</table>"
        )
    flat = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
    parts.append(
        "<h2>Metrics</h2><table>"
        + "".join(f"<tr><th>{esc(k)}</th><td>{v:.4f}</td></tr>" for k, v in flat.items())
        + "</table>"
    )
    parts += sections or []
    curves = training_curves(history or [])
    if curves:
        parts.append("<h2>Training curves</h2>" + curves)
    if material and "y_true" in material and "labels" in material:
        y = np.asarray(material["y_true"])
        labels = material["labels"]
        pred = material.get("y_pred")  # (not a .get default: that would be evaluated when proba is absent)
        pred = np.asarray(pred) if pred is not None else np.asarray(material["proba"]).argmax(1)
        parts.append("<h2>Confusion matrix</h2>" + confusion_plot(y, pred, labels))
        rows = per_class_table(y, pred, labels)
        parts.append(
            "<h2>Per class</h2><table><tr><th>class</th><th>precision</th><th>recall</th><th>f1</th>"
            "<th>support</th></tr>"
            + "".join(
                f"<tr><td>{esc(r['class'])}</td><td>{r['precision']:.3f}</td><td>{r['recall']:.3f}</td>"
                f"<td>{r['f1']:.3f}</td><td>{r['support']}</td></tr>"
                for r in rows
            )
            + "</table>"
        )
        score = None
        if material.get("scores") is not None:
            score = np.asarray(material["scores"], float)
        elif material.get("proba") is not None and len(labels) == 2:
            score = np.asarray(material["proba"], float)[:, int(material.get("positive", 1))]
        pos = int(material.get("positive", 1))
        if score is not None and len(np.unique(y)) == 2:
            parts.append(
                "<h2>ROC, precision-recall and calibration</h2>" + "".join(binary_curves(y == pos, score))
            )
    if material and material.get("importance"):
        parts.append(importance_section(material["importance"]))
    parts.append("</body></html>")
    return "\n".join(parts)


def importance_section(rows: list[dict[str, Any]], top: int = 25) -> str:
    """Permutation importance: a bar chart of the top features and the table of all of them."""
    esc = html.escape
    metric = rows[0].get("metric", "score")
    shown = rows[:top][::-1]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 0.28 * len(shown) + 1))
    ax.barh([r["feature"] for r in shown], [r["importance"] for r in shown],
            xerr=[r["std"] for r in shown], color="#4c78a8")
    ax.set_xlabel(f"drop in {metric} when the feature is shuffled")
    ax.grid(axis="x", alpha=0.3)
    table = "".join(
        f"<tr><td style='text-align:left'>{esc(r['feature'])}</td><td>{r['importance']:.4f}</td>"
        f"<td>{r['std']:.4f}</td></tr>"
        for r in rows
    )
    return (
        f"<h2>Feature importance (permutation, {esc(metric)})</h2>" + _png(fig)
        + f"<table><tr><th>feature</th><th>drop in {esc(metric)}</th><th>std</th></tr>{table}</table>"
    )
