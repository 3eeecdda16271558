"""Operating served apps (luodi.monitor): the prediction log, drift against the training reference, feedback and
live quality, the goal gate on new runs, traffic splits, and bad input to the new routes. Small LightGBM apps on
German Credit (800 applicants, about a second to train each)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from luodi import api
from luodi.errors import LuodiError, NotFound
from luodi.monitor import ID_HEADER, prune
from luodi.monitor.drift import REFERENCE
from luodi.options.monitor import DriftConfig, PredictionLogConfig

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SHIFTED = ("duration", "credit_amount", "age")  # the numeric features a drifted batch moves


def app_file(tmp_path: Path, datasets_dir: Path, name: str, goal: float | None = None, **serve) -> Path:
    cfg = yaml.safe_load((EXAMPLES / "credit-risk.yaml").read_text())
    cfg["name"] = name
    cfg["data"]["path"] = str(datasets_dir / "german-credit" / "german.data")
    cfg["model"] = {"type": "lightgbm", "options": {"n_estimators": 40, "num_leaves": 7}}
    cfg["train"] = {"epochs": 2, "seed": 0}
    cfg["evaluate"].pop("fairness", None)
    if goal is None:
        cfg["evaluate"].pop("goal")
    else:
        cfg["evaluate"]["goal"] = {"metric": "roc_auc", "target": goal}
    cfg["serve"] = {"batch_size": 32, **serve}
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


@pytest.fixture(scope="module")
def credit(datasets_dir, tmp_path_factory):
    """m-credit trained once, and the validation rows (records, labels) it never saw."""
    p = app_file(tmp_path_factory.mktemp("monitor"), datasets_dir, "m-credit")
    run = api.train(p, progress=False)
    task = api.load_predictor("m-credit").task
    _, va = task.split(task.read(None))
    labels = va.pop("risk").astype(str).tolist()
    return {"yaml": str(p), "run": run, "records": va.to_dict("records"), "labels": labels}


@pytest.fixture(scope="module")
def client():
    from luodi.serve.app import create_app
    from luodi.settings import get_settings

    with TestClient(create_app(get_settings().model_copy(update={"auth": "off"}), preload=False)) as c:
        yield c


def shifted(records: list[dict]) -> list[dict]:
    """The same applicants three times as long, as large and 30 years older: what a changed market sends."""
    return [{**r, "duration": r["duration"] * 3, "credit_amount": r["credit_amount"] * 4, "age": r["age"] + 30}
            for r in records]


def monitor(client: TestClient, app: str, **params) -> dict:
    r = client.get(f"/v1/apps/{app}/monitor", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_drifted_numbers_raise_the_score_above_its_threshold_and_undrifted_ones_do_not(credit, client):
    rows = credit["records"]
    r = client.post("/v1/apps/m-credit/predict", json={"inputs": rows})
    assert r.status_code == 200 and len(r.json()["outputs"]) == len(rows)
    ids = r.headers[ID_HEADER].split(",")
    assert len(ids) == len(rows) and all(len(i) == 32 for i in ids)  # serve.log unset: every prediction logged
    calm = monitor(client, "m-credit", limit=len(rows))
    assert calm["window"]["rows"] == len(rows) and calm["served_version"] == credit["run"].version
    scores = {f["feature"]: f for f in calm["drift"]["features"]}
    assert {"duration", "credit_amount", "age", "checking_status", "purpose"} <= set(scores)
    assert calm["drift"]["drifted"] == [], calm["drift"]["features"]
    assert all(scores[f]["score"] < 0.2 for f in SHIFTED)
    assert (credit["run"].path / REFERENCE).exists()  # made once from the training split, beside the run

    assert client.post("/v1/apps/m-credit/predict", json={"inputs": shifted(rows)}).status_code == 200
    moved = monitor(client, "m-credit", limit=len(rows))  # the newest rows: the shifted batch
    scores = {f["feature"]: f for f in moved["drift"]["features"]}
    for f in SHIFTED:
        assert scores[f]["drifted"] and scores[f]["score"] > scores[f]["threshold"] == 0.2, scores[f]
    assert scores["checking_status"]["score"] < 0.2  # categories were not moved
    assert set(moved["drift"]["drifted"]) == set(SHIFTED)

    metrics = client.get("/metrics").text  # the route set the gauge
    assert 'luodi_app_drift{app="m-credit",feature="duration"}' in metrics


def test_feedback_gives_live_accuracy(credit, client):
    rows, labels = credit["records"][:60], credit["labels"][:60]
    r = client.post("/v1/apps/m-credit/predict", json={"inputs": rows})
    ids = r.headers[ID_HEADER].split(",")
    predicted = [o["label"] for o in r.json()["outputs"]]
    items = [{"prediction_id": i, "truth": t} for i, t in zip(ids, labels, strict=True)]
    ok = client.post("/v1/apps/m-credit/feedback", json={"items": items})
    assert ok.status_code == 200 and ok.json()["recorded"] == 60
    rep = monitor(client, "m-credit", limit=60)
    expected = sum(p == t for p, t in zip(predicted, labels, strict=True)) / 60
    assert rep["quality"] == {"metric": "accuracy", "value": round(expected, 4), "rows": 60}
    assert 0.6 <= expected  # the small model still beats the 70 % "good" majority's complement by far
    (version,) = rep["versions"]
    assert version["feedback"] == 60 and version["latency_ms"]["p50"] > 0


def test_predictions_for_uploaded_files_are_logged_too(credit, client):
    import pandas as pd

    rows = credit["records"][:25]
    body = pd.DataFrame(rows).to_csv(index=False).encode()
    r = client.post("/v1/apps/m-credit/predict/files", files=[("files", ("applicants.csv", body, "text/csv"))])
    assert r.status_code == 200, r.text
    outs = r.json()["outputs"]
    assert len(outs) == 25 and all(o["input"] == "applicants.csv" and len(o["prediction_id"]) == 32 for o in outs)
    logged = monitor(client, "m-credit", limit=25)
    assert logged["window"]["rows"] == 25
    # feedback reaches these predictions by their ids, as for /predict
    items = [{"prediction_id": o["prediction_id"], "truth": t} for o, t in zip(outs, credit["labels"][:25],
                                                                               strict=True)]
    assert client.post("/v1/apps/m-credit/feedback", json={"items": items}).json()["recorded"] == 25


def test_bad_input_to_the_new_routes_names_the_field(credit, client):
    r = client.get("/v1/apps/m-credit/monitor", params={"hours": -1})
    assert r.status_code == 422 and "hours" in r.json()["error"]["param"]
    r = client.get("/v1/apps/m-credit/monitor", params={"limit": 0})
    assert r.status_code == 422 and "limit" in r.json()["error"]["param"]
    r = client.post("/v1/apps/m-credit/feedback", json={"items": [{"prediction_id": "nope", "truth": "bad"}]})
    assert r.status_code == 422 and r.json()["error"]["param"] == "items[0].prediction_id"
    r = client.post("/v1/apps/m-credit/feedback", json={"items": []})
    assert r.status_code == 422 and r.json()["error"]["param"] == "items"
    r = client.post("/v1/apps/m-credit/feedback", json={"items": [{"prediction_id": "0" * 32, "truth": "bad"}]})
    assert r.status_code == 404 and r.json()["error"]["param"] == "items[0].prediction_id"
    pid = client.post("/v1/apps/m-credit/predict", json=credit["records"][0]).headers[ID_HEADER]
    r = client.post("/v1/apps/m-credit/feedback", json={"items": [{"prediction_id": pid, "truth": "maybe"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "items[0].truth"
    assert "good" in r.json()["error"]["message"]
    r = client.get("/v1/apps/no-such-app/monitor")
    assert r.status_code == 404
    with pytest.raises(LuodiError, match="hours"):
        api_monitor = __import__("luodi.monitor", fromlist=["monitor"]).monitor
        api_monitor("m-credit", hours=0)


def test_retention_keeps_at_most_max_rows(credit, client):
    client.post("/v1/apps/m-credit/predict", json={"inputs": credit["records"][:120]})
    assert monitor(client, "m-credit", limit=100_000)["window"]["rows"] >= 120
    prune("m-credit", PredictionLogConfig(max_rows=100))
    assert monitor(client, "m-credit", limit=100_000)["window"]["rows"] == 100


def test_a_run_missing_its_goal_is_not_served_until_promoted_with_force(credit, datasets_dir, tmp_path, client):
    ok = api.train(app_file(tmp_path, datasets_dir, "m-gate", goal=0.5), progress=False)
    missed = api.train(app_file(tmp_path, datasets_dir, "m-gate", goal=0.999), progress=False)
    assert api.load_predictor("m-gate").run.version == ok.version  # the newer run is held back
    runs = {r["version"]: r for r in api.list_runs("m-gate")}
    assert runs[ok.version]["served"] and not runs[missed.version]["served"]
    assert "misses its goal: roc_auc" in runs[missed.version]["held"] and "--force" in runs[missed.version]["held"]
    assert client.post("/v1/apps/m-gate/predict", json=credit["records"][0]).json()["version"] == ok.version

    from luodi.cli import app as cli

    refused = CliRunner().invoke(cli, ["promote", "m-gate", missed.version])
    assert refused.exit_code == 2 and "--force" in refused.output
    r = client.post("/v1/apps/m-gate/promote", json={"version": missed.version})
    assert r.status_code == 409 and r.json()["error"]["param"] == "force"
    assert api.load_predictor("m-gate").run.version == ok.version
    forced = CliRunner().invoke(cli, ["promote", "m-gate", missed.version, "--force"])
    assert forced.exit_code == 0, forced.output
    assert api.load_predictor("m-gate").run.version == missed.version
    api.promote("m-gate", None)  # unpinned: back to the newest run that meets its goal
    assert api.load_predictor("m-gate").run.version == ok.version


def test_only_runs_missing_their_goal_leave_nothing_to_serve(datasets_dir, tmp_path):
    run = api.train(app_file(tmp_path, datasets_dir, "m-gate-only", goal=0.999), progress=False)
    with pytest.raises(NotFound, match="misses its goal.*--force"):
        api.load_predictor("m-gate-only")
    ev = api.evaluate("m-gate-only", report=False)  # a held run is still evaluated: that is how one decides
    assert ev["version"] == run.version and "misses its goal" in ev["held"]
    assert ev["metrics"]["roc_auc"] == pytest.approx(run.metrics["roc_auc"], abs=1e-6)


def test_traffic_split_sends_both_versions_traffic(credit, datasets_dir, tmp_path, client):
    first = api.train(app_file(tmp_path, datasets_dir, "m-split"), progress=False)
    second = api.train(
        app_file(tmp_path, datasets_dir, "m-split", traffic={first.version: 50, "v2": 50}), progress=False
    )
    assert second.version == "v2"
    seen = [client.post("/v1/apps/m-split/predict", json=r).json()["version"] for r in credit["records"][:40]]
    assert set(seen) == {first.version, second.version}
    again = [client.post("/v1/apps/m-split/predict", json=r).json()["version"] for r in credit["records"][:40]]
    assert again == seen  # deterministic: the same body, the same version
    pinned = client.post("/v1/apps/m-split/predict", params={"version": "v1"}, json=credit["records"][0])
    assert pinned.json()["version"] == "v1"  # ?version= is not split
    rep = monitor(client, "m-split")
    counts = {v["version"]: v["predictions"] for v in rep["versions"]}
    assert counts[first.version] + counts[second.version] == 81 and min(counts.values()) >= 8
    assert rep["traffic"] == {first.version: 50, "v2": 50}
    assert all(v["latency_ms"]["p95"] >= v["latency_ms"]["p50"] > 0 for v in rep["versions"])


def test_sampling_and_config_errors(credit, datasets_dir, tmp_path, client):
    api.train(app_file(tmp_path, datasets_dir, "m-quiet", log={"sample": 0.0}), progress=False)
    r = client.post("/v1/apps/m-quiet/predict", json=credit["records"][0])
    assert r.status_code == 200 and ID_HEADER not in r.headers
    assert monitor(client, "m-quiet")["window"]["rows"] == 0
    with pytest.raises(LuodiError, match="serve.traffic"):
        api.train(app_file(tmp_path, datasets_dir, "m-bad", traffic={"v1": 100}), progress=False)
    with pytest.raises(LuodiError, match="serve.log.sample"):
        api.train(app_file(tmp_path, datasets_dir, "m-bad", log={"sample": 2}), progress=False)


def test_cli_monitor_prints_the_same_report(credit):
    from luodi.cli import app as cli

    r = CliRunner().invoke(cli, ["monitor", credit["yaml"], "--json", "--limit", "50"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["app"] == "m-credit" and rep["window"]["rows"] == 50 and rep["drift"]["features"]
    bad = CliRunner().invoke(cli, ["monitor", credit["yaml"], "--hours", "0"])
    assert bad.exit_code == 2 and "hours" in bad.output


@pytest.mark.browser
def test_console_draws_the_monitor_chart(credit, live_server):
    """Apps & runs -> an app -> its monitor card: a bar per feature, the drifted ones flagged, the versions."""
    import os

    import httpx

    chromium = Path(os.environ.get("LUODI_CHROMIUM", "/usr/bin/chromium"))
    if not chromium.exists():
        pytest.skip(f"chromium not found at {chromium}: `make browser-deps` or set LUODI_CHROMIUM")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    for _ in range(5):  # the window is dominated by a changed market
        r = httpx.post(f"{live_server.url}/v1/apps/m-credit/predict", json={"inputs": shifted(credit["records"])},
                       headers=live_server.headers, timeout=60)
        assert r.status_code == 200
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_context(base_url=live_server.url).new_page()
            page.set_default_timeout(30_000)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.add_init_script(f"localStorage.setItem('luodi.apiKey', {live_server.key!r})")
            page.goto("/#apps")
            page.click("#apps-table tr[data-app='m-credit']")
            page.wait_for_selector("#monitor-drift .drift-row[data-feature='duration'][data-drifted='true']")
            calm = page.query_selector("#monitor-drift .drift-row[data-feature='checking_status']")
            assert calm.get_attribute("data-drifted") == "false"
            assert page.query_selector(f"#monitor-versions tr[data-version='{credit['run'].version}']")
            page.fill("#monitor-hours", "-1")  # the server's 422 names the parameter
            page.click("#monitor-reload")
            assert "hours" in page.wait_for_selector("#app-monitor .error").inner_text()
            assert not errors, errors
        finally:
            browser.close()


def test_text_drift_is_the_embedding_centroid_moving(datasets_dir):
    """Banking questions against banking questions: no drift; news sentences (CoNLL-2003) against them: drift,
    with luodi's sentence encoder."""
    import numpy as np
    import pandas as pd

    from luodi.embeddings import get_encoder
    from luodi.monitor.drift import build_reference, score_feature

    texts = pd.read_csv(datasets_dir / "banking77" / "train.csv").text.tolist()
    pick = np.random.default_rng(0).permutation(len(texts))
    encode = get_encoder().encode
    ref = build_reference({"text": [texts[i] for i in pick[:400]]}, 10, encode)["features"]["text"]
    assert ref["kind"] == "text" and ref["spread"] > 0
    calm, n = score_feature(ref, [texts[i] for i in pick[400:480]], encode)
    sentences, words = [], []
    for line in (datasets_dir / "conll2003" / "eng.train").read_text().splitlines():
        if line.strip() and not line.startswith("-DOCSTART"):
            words.append(line.split()[0])
        elif words:
            sentences.append(" ".join(words))
            words = []
    news, _ = score_feature(ref, [s for s in sentences if len(s.split()) >= 6][:80], encode)
    limit = DriftConfig().text_threshold
    assert n == 80 and calm < limit < news, (calm, news)


def test_with_the_pii_guard_on_logged_texts_are_redacted(credit, tmp_path):
    """LUODI_GUARD_PII (patterns only here) redacts the texts of logged inputs in the writer, off the request."""
    from luodi.monitor import predlog
    from luodi.serve.app import create_app
    from luodi.settings import get_settings

    guard = tmp_path / "guard.yaml"
    guard.write_text("ner_app: null\n")
    create_app(get_settings().model_copy(update={"auth": "off", "guard_pii": str(guard)}), preload=False)
    try:
        pred = api.load_predictor("m-credit")
        record = {**credit["records"][0], "text": "mail jane.doe@example.com about my loan"}
        [pid] = predlog.log_predictions(pred, [record], pred.predict([credit["records"][0]]), 0.01)
        predlog.WRITER.flush()
        from luodi.store.db import session_scope
        from luodi.store.tables import PredictionLog

        with session_scope() as s:
            logged = s.get(PredictionLog, pid).inputs
        assert "jane.doe@example.com" not in logged["text"] and "about my loan" in logged["text"]
        assert logged["duration"] == record["duration"]  # numbers untouched
    finally:
        create_app(get_settings().model_copy(update={"auth": "off"}), preload=False)  # guard off again
        assert predlog._redactor is None
