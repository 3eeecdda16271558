"""Operate served apps: the prediction log (predlog), drift against the training reference (drift), the monitor
report (report: route, CLI, console, gauge) and traffic splits between versions (traffic).

Layering: beside audit/ (above apps/: it loads runs and their data); serve/ and cli/ call it.
"""

from luodi.monitor.predlog import (
    ID_HEADER,
    id_header,
    log_predictions,
    prune,
    record_feedback,
    redact_logged_inputs,
)
from luodi.monitor.report import drift_scores, monitor
from luodi.monitor.traffic import pick, routed

__all__ = ["ID_HEADER", "drift_scores", "id_header", "log_predictions", "monitor", "pick", "prune",
           "record_feedback", "redact_logged_inputs", "routed"]
