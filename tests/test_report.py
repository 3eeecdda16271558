"""report.html rendering from evaluation material."""

from __future__ import annotations

from luodi.evaluate.report import render_report


def test_report_from_predictions_without_probabilities():
    """Many-class apps (e.g. 77 intents) send labels and predictions but no probability matrix."""
    labels = [f"intent_{i}" for i in range(30)]
    y_true = [i % 30 for i in range(90)]
    y_pred = [(i + (i % 7 == 0)) % 30 for i in range(90)]
    html = render_report("many classes", {"accuracy": 0.84}, {"y_true": y_true, "y_pred": y_pred, "labels": labels})
    assert "Confusion matrix" in html and "intent_29" in html
    assert "<h2>ROC" not in html  # no probabilities: no curves


def test_report_from_probabilities_only():
    proba = [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]
    html = render_report("binary", {}, {"y_true": [0, 1, 1], "proba": proba, "labels": ["no", "yes"]})
    assert "Confusion matrix" in html
