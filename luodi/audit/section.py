"""One part of an audit report: a title, the numbers (audit.json) and an HTML fragment (audit.html).

Each audit area (fairness, robustness, explanations, the manifest, the server settings) builds its Section from a
trained run; luodi.audit.report puts them on one page. Plots are inline PNGs (`figure_html`), so the page is one
self-contained file.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Section:
    title: str
    numbers: dict[str, Any] = field(default_factory=dict)  # JSON-serializable: what audit.json stores
    html: str = ""  # a fragment: tables, figures, notes (already escaped)
    status: str = "ok"  # ok | warning (a goal missed, a check failed) | skipped (does not apply, with why)
    note: str = ""  # one line shown under the title (why skipped, what was measured)


def table_html(rows: list[dict[str, Any]], digits: int = 4) -> str:
    """A plain HTML table of dict rows (the keys of the first row are the columns)."""
    if not rows:
        return ""
    cols = list(rows[0])

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.{digits}f}"
        return html.escape("-" if v is None else str(v))

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def figure_html(fig: Any, alt: str) -> str:
    """A matplotlib figure as an inline PNG (closed afterwards)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"
