"""Issue 19's goals in one run: fairness, robustness, explanations, and the audit page of four apps.

    python bench/trust.py                      # run every part, then print every goal against its target
    python bench/trust.py --only audit,explain # some parts: fairness, explain, explain_media, robustness,
                                               # robustness_text, audit
    python bench/trust.py --stored             # print the goals from bench/results without running anything

Each measured part is its own bench script (bench/fairness.py, explain.py, explain_media.py, robustness.py,
robustness_text.py) that stores its numbers and goals in bench/results/<part>.json; run alone, each has more
options. The audit part lives here: it trains credit-risk, income, handwritten-digits and banking-intents in a
temporary LUODI_HOME, runs `luodi audit` on each, and opens each audit.html in headless Chromium to check that the
page renders and that every measured section carries its plot. Then `python bench/tables.py` renders the goal
table into docs/responsible-ai.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import record
import tables
from goals import chosen_parts, report, run_script

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
SCRIPTS = {  # part -> the bench script that measures it (and stores bench/results/<part>.json)
    "fairness": ["fairness.py"],
    "explain": ["explain.py"],
    "explain_media": ["explain_media.py"],
    "robustness": ["robustness.py"],
    "robustness_text": ["robustness_text.py"],
}
PARTS = [*SCRIPTS, "audit"]
# the four apps the issue names, with what their audit is asked for; banking-intents trains its fast heads
AUDITED: dict[str, dict[str, Any]] = {
    "credit-risk": {"options": {}},
    "income": {"options": {}},
    "handwritten-digits": {"options": {"eps": 0.1}},
    "banking-intents": {
        "options": {},
        "overrides": {
            "model.options.features": ["embeddings", "tfidf"],
            "model.options.head_weights": {"embeddings": 0.85, "tfidf": 0.15},
        },
    },
}
PLOTTED = ("Fairness", "Robustness", "Explanations")  # sections that must carry a plot when measured


def check_page(page: Any, path: Path, statuses: dict[str, str]) -> dict[str, Any]:
    """What a reader sees: the page loads, every section of audit.json is on it, and every measured one of
    `PLOTTED` has a plot the browser drew (an `img` with a decoded width)."""
    page.goto(path.as_uri())
    sections = page.eval_on_selector_all(
        "h2",
        """hs => hs.map(h => {
            const imgs = [];
            for (let e = h.nextElementSibling; e && e.tagName !== 'H2'; e = e.nextElementSibling)
                imgs.push(...(e.tagName === 'IMG' ? [e] : e.querySelectorAll('img')));
            return {title: h.textContent, plots: imgs.length,
                    drawn: imgs.filter(i => i.complete && i.naturalWidth > 0).length};
        })""",
    )
    rows = []
    for s in sections:
        needs_plot = s["title"] in PLOTTED and statuses.get(s["title"]) == "ok"
        drawn = s["plots"] > 0 and s["drawn"] == s["plots"]
        rows.append({**s, "status": statuses.get(s["title"]), "ok": drawn or not needs_plot})
    complete = [r["title"] for r in rows] == list(statuses)
    return {"title": page.title(), "sections": rows, "ok": complete and all(r["ok"] for r in rows)}


def audit_part(keep: Path | None, apps: list[str]) -> dict[str, Any]:
    """Train the four apps (or `apps`), audit each, and check each audit.html in a real browser; apps measured
    before and not asked for now keep their stored result."""
    home = Path(keep or tempfile.mkdtemp(prefix="luodi-bench-trust-"))
    os.environ["LUODI_HOME"] = str(home)
    from playwright.sync_api import sync_playwright

    from luodi import api
    from luodi.apps import registry
    from luodi.audit.report import audit

    chromium = shutil.which("chromium") or os.environ.get("LUODI_CHROMIUM")
    old = record.load("audit_pages") or {}
    out: dict[str, Any] = {"machine": record.machine(), "apps": {}, "goals": []}
    for app, how in AUDITED.items():
        if app not in apps:
            if app in old.get("apps", {}):
                out["apps"][app] = old["apps"][app]
                out["goals"] += [g for g in old["goals"] if g["goal"].startswith(f"{app}:")]
            continue
        print(f"\n=== audit {app}", flush=True)
        t0 = time.monotonic()
        if app not in registry.apps_with_runs():
            api.train(ROOT / "examples" / f"{app}.yaml", progress=False, overrides=how.get("overrides"))
        trained = time.monotonic()
        res = audit(app, log=lambda m: print("  " + m, flush=True), **how["options"])
        audited = time.monotonic()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium)
            page = browser.new_page()
            seen = check_page(page, Path(res["html"]), {t: v["status"] for t, v in res["sections"].items()})
            browser.close()
        for s in seen["sections"]:
            flag = "" if s["ok"] else " MISSING"
            print(f"  {s['title']} ({s['status']}): plots drawn {s['drawn']}/{s['plots']}{flag}")
        out["apps"][app] = {
            "version": res["version"], "train_s": round(trained - t0, 1), "audit_s": round(audited - trained, 1),
            "sections": {t: {"status": v["status"], "note": v["note"]} for t, v in res["sections"].items()},
            "page": seen,
        }
        out["goals"].append({
            "goal": f"{app}: audit.html renders in Chromium with a plot in every measured section",
            "value": sum(s["drawn"] for s in seen["sections"]), "target": None, "op": None, "met": seen["ok"],
            "note": ", ".join(f"{s['title']} {s['status']}" for s in seen["sections"] if s["title"] in PLOTTED),
        })
    record.save("audit_pages", out)
    return {"part": "audit", "rc": 0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help=f"comma-separated parts ({', '.join(PARTS)}); default all")
    ap.add_argument("--stored", action="store_true", help="print the stored goals only; run nothing")
    ap.add_argument("--apps", default=",".join(AUDITED), help="apps the audit part trains and audits")
    ap.add_argument("--home", type=Path, help="LUODI_HOME for the audit part (kept; reuses apps trained there)")
    args = ap.parse_args()
    failed = []
    for part in [] if args.stored else chosen_parts(ap, args.only, PARTS):
        res = audit_part(args.home, args.apps.split(",")) if part == "audit" else run_script(part, SCRIPTS[part])
        if res["rc"]:
            failed.append(part)
    return report(19, tables.TRUST_PARTS, "trust.py", "docs/responsible-ai.md", failed)


if __name__ == "__main__":
    sys.exit(main())
