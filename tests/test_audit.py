"""`luodi audit` (luodi.audit.report): one page per run, written beside report.html, by the CLI and over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from luodi import api
from luodi.audit.report import AUDIT_HTML, AUDIT_JSON, audit
from luodi.errors import BadRequest


@pytest.fixture(scope="module")
def credit_app(tmp_path_factory) -> dict:
    """A small binary table app whose label leans on a sensitive column (group), so fairness has a gap to show."""
    d = tmp_path_factory.mktemp("audit")
    rng = np.random.default_rng(0)
    n = 400
    group = rng.choice(["a", "b"], n)
    income = rng.normal(size=n) + np.where(group == "a", 0.8, -0.8)
    debt = rng.normal(size=n)
    y = np.where(income - debt + rng.normal(scale=0.5, size=n) > 0, "good", "bad")
    pd.DataFrame({"income": income, "debt": debt, "group": group, "y": y}).to_csv(d / "c.csv", index=False)
    app = {
        "name": "audit-credit",
        "task": "tabular",
        "data": {"path": str(d / "c.csv"), "columns": {"label": "y"}, "split": {"valid": 0.3, "seed": 0}},
        "model": {"type": "lightgbm", "options": {"n_estimators": 40, "min_child_samples": 5}},
        "evaluate": {"fairness": {"sensitive": ["group"]}},
    }
    api.train(app, progress=False)
    return app


def test_audit_writes_one_page_with_every_section(credit_app):
    res = audit("audit-credit")
    run = api.load_predictor("audit-credit").run
    page = (run.path / AUDIT_HTML).read_text()
    stored = json.loads((run.path / AUDIT_JSON).read_text())
    assert stored["sections"].keys() == res["sections"].keys()
    titles = list(res["sections"])
    assert titles[0] == "Integrity" and titles[-1] == "Server security settings"
    for title in titles:
        assert f"<h2 id='{title}'>" in page
    server = res["sections"]["Server security settings"]
    assert {"auth", "tls", "max_body_mb", "cors_origins", "audit_log"} <= server.keys() and server["tls"] is False
    integrity = res["sections"]["Integrity"]
    assert integrity["verified"] and integrity["files"] >= 3
    fairness = next(v for k, v in res["sections"].items() if k.lower().startswith("fairness"))
    assert fairness["status"] != "skipped"  # group is a column of this table app
    api.forget_loaded()  # the audit files are not part of the run's manifest: the run still verifies and loads
    assert api.predict("audit-credit", [{"income": 1.0, "debt": 0.0, "group": "a"}])


def test_audit_refuses_an_unknown_area_naming_it(credit_app):
    with pytest.raises(BadRequest) as err:
        audit("audit-credit", areas=["fairness", "vibes"])
    assert err.value.param == "areas" and "vibes" in err.value.message


def test_audit_over_http_and_from_the_cli(credit_app):
    from luodi.cli import app as cli
    from luodi.serve.app import create_app
    from luodi.settings import get_settings

    r = CliRunner().invoke(cli, ["audit", "audit-credit", "--only", "explanations"])
    assert r.exit_code == 0, r.output
    assert "Integrity: ok" in r.output and "audit written to" in r.output

    app = create_app(get_settings().model_copy(update={"auth": "off"}), preload=False)
    with TestClient(app) as c:
        r = c.post("/v1/apps/audit-credit/audit", json={"areas": ["fairness"], "sensitive": ["group"]})
        assert r.status_code == 200, r.text
        page = c.get(r.json()["audit_url"])
        assert page.status_code == 200 and "Audit of audit-credit" in page.text
        bad = c.post("/v1/apps/audit-credit/audit", json={"eps": -1})
        assert bad.status_code == 422 and "eps" in bad.text
        missing = c.get("/v1/apps/audit-credit/runs/v99/audit")
        assert missing.status_code == 404


def test_a_tampered_run_is_refused_before_the_audit(credit_app, tmp_path):
    run = api.load_predictor("audit-credit").run
    skip = ("manifest.json", AUDIT_JSON)
    target = next(p for p in Path(run.path).iterdir() if p.suffix == ".json" and p.name not in skip)
    original = target.read_bytes()
    try:
        target.write_bytes(original + b" ")
        api.forget_loaded()
        from luodi.apps.registry import RunIntegrityError

        with pytest.raises(RunIntegrityError, match=target.name):
            audit("audit-credit")
    finally:
        target.write_bytes(original)
        api.forget_loaded()


def test_robustness_of_a_table_app_with_ordered_categories(tmp_path):
    """Ordered categories reach the model as ranks but are categories: the attack never moves them (it used to
    fail on them: 'column must be numeric')."""
    rng = np.random.default_rng(1)
    n = 300
    level = rng.choice(["low", "mid", "high"], n)
    x = rng.normal(size=n) + pd.Series(level).map({"low": -1.0, "mid": 0.0, "high": 1.0}).to_numpy()
    y = np.where(x + rng.normal(scale=0.3, size=n) > 0, "yes", "no")
    pd.DataFrame({"x": x, "level": level, "y": y}).to_csv(tmp_path / "o.csv", index=False)
    app = {
        "name": "audit-ordinal",
        "task": "tabular",
        "data": {"path": str(tmp_path / "o.csv"), "columns": {"label": "y"}, "split": {"valid": 0.3, "seed": 0}},
        "model": {"type": "lightgbm", "options": {"n_estimators": 30, "min_child_samples": 5,
                                                  "ordinal": {"level": ["low", "mid", "high"]}}},
    }
    api.train(app, progress=False)
    sec = audit("audit-ordinal", areas=["robustness"])["sections"]["Robustness"]
    assert "not measured" not in sec["note"] and 0 <= sec["robust_accuracy"] <= sec["clean_accuracy"] + 0.05
    assert "level" in sec["fixed_features"] and sec["moved_features"] == ["x"]
