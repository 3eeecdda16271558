"""`luodi audit`: one page on a trained run, for whoever must sign it off.

It holds fairness by group, robustness against manipulated inputs, explanations, the run's integrity (its sha256
manifest) and the security settings the server would serve it with. The page is written as audit.html, with the
numbers in audit.json, beside the run's report.html. Those two files are derived from the run and are not part of
its manifest.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from luodi import atomic, crypto
from luodi.apps import registry
from luodi.apps.configs import AppRef
from luodi.apps.predict import load_predictor
from luodi.audit import explanations, fairness, robustness
from luodi.audit.section import Section, table_html
from luodi.errors import LuodiError
from luodi.settings import get_settings, security_summary
from luodi.tasks import task_for
from luodi.train.privacy import PRIVACY_FILE

AUDIT_HTML, AUDIT_JSON = registry.AUDIT_PAGE, "audit.json"
# the areas measured on the model, in page order; each is section(pred, train, valid, **options) -> Section
AREAS: dict[str, Callable[..., Section]] = {
    "fairness": fairness.section,
    "robustness": robustness.section,
    "explanations": explanations.section,
}


def manifest_section(run_dir: Path) -> Section:
    """The run's files against its sha256 manifest (a tampered run would not have loaded: this records the check)."""
    man = registry.verify_manifest(run_dir)
    rows = [{"file": rel, "bytes": meta["bytes"], "sha256": meta["sha256"][:16] + "…"}
            for rel, meta in sorted(man["files"].items())]
    libs = ", ".join(f"{k} {v}" for k, v in sorted(man.get("libraries", {}).items()))
    return Section(
        "Integrity", {"files": len(rows), "verified": True, "libraries": man.get("libraries", {})},
        f"<details><summary>the {len(rows)} files and their sha256</summary>{table_html(rows)}</details>"
        f"<p>Trained with: {html.escape(libs)}</p>",
        note=f"all {len(rows)} files match manifest.json (sha256)",
    )


def _guards(s: Any) -> tuple[Any, Any]:
    """The PII and injection guards' settings as `luodi serve` would parse them (None: off or unreadable here)."""
    pii = injection = None
    try:
        if s.guard_pii:
            from luodi.privacy.guard import guard_config

            pii = guard_config(s.guard_pii)
        if s.guard_injection:
            from luodi.privacy.injection_server import injection_setting

            injection = injection_setting(s.guard_injection)
    except (LuodiError, ImportError):
        pass  # serve would refuse to start with it: the section reports the guard as off
    return pii, injection


def server_section() -> Section:
    """The security settings `luodi serve` would serve the app with, from this environment's LUODI_* settings."""
    s = get_settings()
    numbers = security_summary(s, *_guards(s))
    rows = [{"setting": k, "value": v if v is not None else "off"} for k, v in numbers.items()]
    warn = s.auth == "off" or s.host not in ("127.0.0.1", "localhost", "::1")
    note = ("API keys are OFF: any caller can predict" if s.auth == "off"
            else "API keys required on every /v1 route")
    if warn and s.auth != "off":
        note += f"; listening on {s.host} (not only this machine)"
    return Section("Server security settings", numbers, table_html(rows), "warning" if s.auth == "off" else "ok", note)


def privacy_section(run_dir: Path) -> Section:
    """The run's differential privacy: the budget, the epsilon its training spent and the noise that bought it
    (privacy.json, written by luodi.train.privacy); a run trained without train.privacy says so."""
    path = run_dir / PRIVACY_FILE
    if not path.exists():
        return Section("Privacy", {"differential_privacy": None}, "", "skipped",
                       "trained without differential privacy (train.privacy: {epsilon: ...} trains image apps with "
                       "DP-SGD)")
    spent = crypto.read_json(path)
    rows = [{"setting": k, "value": v} for k, v in spent.items()]
    note = (f"DP-SGD: epsilon {spent['epsilon_spent']} spent of {spent['epsilon_target']} "
            f"(delta {spent['delta']:.2g}, gradients clipped to {spent['max_grad_norm']})")
    return Section("Privacy", {"differential_privacy": spent}, table_html(rows), "ok", note)


def measure(name: str, fn: Callable[..., Section], pred: Any, train: Any, valid: Any, options: dict) -> Section:
    """One area's section; an area that fails is shown as failed (with its message) instead of losing the page."""
    t0 = time.perf_counter()
    try:
        sec = fn(pred, train, valid, **options)
    except LuodiError as e:
        sec = Section(name.capitalize(), {"error": str(e)}, "", "warning", f"not measured: {e}")
    sec.numbers.setdefault("seconds", round(time.perf_counter() - t0, 2))
    return sec


def audit(
    app: AppRef,
    version: str | None = None,
    *,
    areas: list[str] | None = None,
    log: Callable[[str], None] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Audit the run an app serves (or `version`): write audit.html and audit.json beside its report.html and return
    the numbers. `options` reach every area (sensitive=[...], attack="pgd", eps=0.1, ...)."""
    unknown = sorted(set(areas or []) - set(AREAS))
    if unknown:
        from luodi.errors import BadRequest

        raise BadRequest(f"unknown audit area '{unknown[0]}'; choose from {', '.join(AREAS)}", param="areas")
    pred = load_predictor(app, version)  # checks the manifest before anything is loaded
    say = log or (lambda _m: None)
    task = task_for(pred.config)
    say(f"reading {pred.config.name}'s data and its validation split")
    train, valid = task.split(task.read(None))
    sections = [manifest_section(pred.run.path)]
    for name in areas or list(AREAS):
        say(f"measuring {name}")
        sections.append(measure(name, AREAS[name], pred, train, valid, options))
    sections += [privacy_section(pred.run.path), server_section()]
    out = {"app": pred.run.app, "version": pred.run.version, "task": pred.config.task,
           "sections": {s.title: {"status": s.status, "note": s.note, **s.numbers} for s in sections}}
    atomic.write_text(pred.run.path / AUDIT_HTML, render(pred.run.app, pred.run.version, pred.config.task, sections))
    atomic.write_text(pred.run.path / AUDIT_JSON, json.dumps(out, indent=2, default=str))
    out["html"] = str(pred.run.path / AUDIT_HTML)
    return out


def render(app: str, version: str, task: str, sections: list[Section]) -> str:
    """A self-contained HTML page: a summary line per section, then each section."""
    esc = html.escape
    colour = {"ok": "#1a7f37", "warning": "#b35900", "skipped": "#777"}
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>audit: {esc(app)} {esc(version)}</title><style>"
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}"
        "img{margin:6px;border:1px solid #eee}.st{font-weight:bold}</style></head><body>",
        f"<h1>Audit of {esc(app)} {esc(version)} ({esc(task)})</h1><ul>",
    ]
    for s in sections:
        parts.append(f"<li><a href='#{esc(s.title)}'>{esc(s.title)}</a>: <span class='st' "
                     f"style='color:{colour.get(s.status, '#000')}'>{esc(s.status)}</span> {esc(s.note)}</li>")
    parts.append("</ul>")
    for s in sections:
        parts.append(f"<h2 id='{esc(s.title)}'>{esc(s.title)}</h2><p>{esc(s.note)}</p>{s.html}")
    parts.append("</body></html>")
    return "".join(parts)
