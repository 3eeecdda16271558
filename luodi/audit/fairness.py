"""The fairness section of an audit: per-group metrics of a tabular binary app on its validation rows, the
demographic-parity and equalized-odds differences with bootstrap intervals, and a bar plot by group.

The sensitive columns come from `luodi audit --sensitive` or the app's evaluate.fairness; they are read from the
validation frame, so a column the model does not use as a feature (left out on purpose) is audited too. The
decisions are the served ones: with train.fairness, the per-group thresholds.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from luodi.audit.section import Section, figure_html, table_html
from luodi.errors import ConfigError
from luodi.evaluate.fairness import fairness_report, group_labels

TITLE = "Fairness"
METRICS = ("selection_rate", "tpr", "fpr", "accuracy")


def sensitive_columns(pred: Any, sensitive: list[str] | str | None) -> tuple[list[str], dict[str, list[float]]]:
    """The columns to audit and their bins: the argument (a list or "sex,age:25" - cut points after a colon),
    else evaluate.fairness."""
    if isinstance(sensitive, str):
        sensitive = [c.strip() for c in sensitive.split(",") if c.strip()]
    fc = pred.config.evaluate.fairness
    bins = dict(fc.bins) if fc else {}
    if not sensitive:
        return (list(fc.sensitive) if fc else []), bins
    columns = []
    for item in sensitive:
        col, *cuts = str(item).split(":")
        if cuts:
            try:
                bins[col] = [float(c) for c in cuts]
            except ValueError as e:
                raise ConfigError(f"sensitive '{item}': cut points after ':' must be numbers, e.g. age:25") from e
        columns.append(col)
    return columns, bins


def measure(
    task: Any, valid: Any, columns: list[str], bins: dict[str, list[float]], resamples: int = 200,
    confidence: float = 0.95, seed: int = 0,
) -> dict[str, Any]:
    """The numbers of the section, from a fitted tabular task and labelled rows (usable without a report)."""
    missing = [c for c in columns if c not in valid.columns]
    if missing:
        raise ConfigError(
            f"sensitive column '{missing[0]}' is not in the data; columns are: {', '.join(map(str, valid.columns))}"
        )
    p = task.predict_proba(valid)
    y = (task._target(valid) == task.positive).astype(int)
    chosen = (task._decisions(valid, p) == task.positive).astype(int)
    groups = {}
    for c in columns:
        if c not in bins and valid[c].dtype.kind in "fi" and valid[c].nunique() > 10:
            raise ConfigError(
                f"sensitive column '{c}' is numeric with {valid[c].nunique()} values: group it with "
                f"evaluate.fairness.bins, e.g. {{{c}: [25]}}"
            )
        try:
            groups[c] = group_labels(valid[c], bins.get(c))
        except ValueError as e:
            raise ConfigError(f"'evaluate.fairness.bins': column '{c}': {e}") from e
    return fairness_report(y, chosen, p[:, task.positive], groups, resamples, confidence, seed)


def plot(report: dict[str, Any]) -> Any:
    """One panel per sensitive column: selection rate, TPR, FPR and accuracy, one bar per group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(report), figsize=(5 * len(report), 3.2), squeeze=False)
    for ax, (col, r) in zip(axes[0], report.items(), strict=True):
        groups = [g["group"] for g in r["groups"]]
        width = 0.8 / len(groups)
        for j, g in enumerate(r["groups"]):
            xs = np.arange(len(METRICS)) + j * width
            ax.bar(xs, [g[m] for m in METRICS], width, label=str(g["group"]))
        ax.set_xticks(np.arange(len(METRICS)) + width * (len(groups) - 1) / 2, METRICS)
        ax.set_ylim(0, 1)
        ax.set_title(f"by {col}")
        ax.legend(fontsize=7)
    return fig


def mitigation_html(m: dict[str, Any]) -> str:
    """What train.fairness chose: the constraint(s), each tolerance and the gaps on the rows the thresholds were
    fitted on (a run stored before tolerances were kept shows the constraint only)."""
    named = [m["constraint"]] if isinstance(m["constraint"], str) else list(m["constraint"])
    tol, fit = m.get("tolerance") or {}, m.get("fit_gaps") or {}
    said = []
    for c in named:
        text = c.replace("_", " ")
        if c in tol:
            text += f" within {tol[c]:g}"
        if c in fit:
            text += f" (fitted rows: {fit[c]:.3f})"
        said.append(text)
    cuts = ", ".join(f"{g}: {t:.4f}" for g, t in m["thresholds"].items())
    return (f"<p>Decisions use per-group thresholds by {m['sensitive']}, {' and '.join(said)}: {cuts}. "
            "The probabilities are the model's.</p>")


def section(pred: Any, train: Any, valid: Any, sensitive: list[str] | str | None = None, **_: Any) -> Section:
    """Per-group metrics and both differences (with intervals) of the served decisions, on the validation rows."""
    task = pred.task
    if pred.config.task != "tabular" or getattr(task, "objective", None) != "binary":
        return Section(TITLE, {}, "", "skipped", "fairness by group applies to tabular binary classification apps")
    columns, bins = sensitive_columns(pred, sensitive)
    if not columns:
        return Section(TITLE, {}, "", "skipped", "no sensitive column: set evaluate.fairness.sensitive or --sensitive")
    fc = pred.config.evaluate.fairness
    options = {"resamples": fc.resamples, "confidence": fc.confidence, "seed": fc.seed} if fc else {}
    report = measure(task, valid, columns, bins, **options)
    level = int(round(100 * (fc.confidence if fc else 0.95)))
    parts, lines = [], []
    for col, r in report.items():
        dp, eo = r["demographic_parity_difference"], r["equalized_odds_difference"]
        lines.append(f"{col}: parity gap {dp['value']:.3f}, odds gap {eo['value']:.3f}")
        parts.append(
            f"<h3>by {col}</h3>"
            + table_html(r["groups"])
            + table_html([
                {"difference": name, "value": d["value"], f"{level}% low": d["low"], f"{level}% high": d["high"]}
                for name, d in (("demographic parity", dp), ("equalized odds", eo))
            ])
        )
    mitigation = task.fairness.to_json() if getattr(task, "fairness", None) else None
    if mitigation:
        parts.append(mitigation_html(mitigation))
    html = figure_html(plot(report), "selection rate, TPR, FPR and accuracy by group") + "".join(parts)
    numbers = {"rows": int(len(valid)), "columns": report, "mitigation": mitigation}
    note = "; ".join(lines) + " (validation rows"
    if pred.config.train.refit:  # the served model was trained once more on train + validation rows
        note += "; the served model was refit on them (train.refit), so these gaps are optimistic"
    return Section(TITLE, numbers, html, "ok", note + ")")
