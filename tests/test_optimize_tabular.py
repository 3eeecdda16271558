"""luodi optimize --method onnx on a small credit-risk-like app (2 cross-fitted members of LightGBM, an MLP on the
compact coding, a linear model and a forest): the whole ensemble as one ONNX graph agrees with the original,
is served like any run (same labels and probabilities, also for missing values and unseen categories), still
explains, and unknown or repeated methods are refused. --method distill replaces the ensemble by one MLP student
that serves, keeps most of the quality and composes with onnx; `luodi export`'s bundle (model.onnx,
preprocess.json, predict.py) run in a clean interpreter reproduces luodi's labels and probabilities."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from luodi import api
from luodi.apps.export import export
from luodi.apps.optimize import optimize
from luodi.apps.registry import get_run, verify_manifest
from luodi.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def credit_app(datasets_dir, tmp_path_factory):
    cfg = yaml.safe_load((EXAMPLES / "credit-risk.yaml").read_text())
    cfg["name"] = "opt-credit"
    cfg["data"]["path"] = str(datasets_dir / "german-credit" / "german.data")
    options = cfg["model"]["options"]
    options.update(inner_folds=2, n_estimators=40, forest_trees=10, hidden=[16],
                   ensemble_weights={"lightgbm": 1, "mlp": 1, "linear": 1, "forest": 1})
    cfg["train"].update(epochs=4)
    cfg["train"].pop("refit")
    for key in ("tune",):
        cfg.pop(key)
    cfg["evaluate"].pop("goal")
    cfg["optimize"] = {"calibration_rows": 64, "latency_rows": 20, "throughput_rows": 64,
                       "distill": {"mlp": {"epochs": 40, "augment": 1.0}}}
    path = tmp_path_factory.mktemp("optimize-tabular") / "app.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return {"yaml": str(path), "base": api.train(str(path), progress=False)}


def test_onnx_run_agrees_and_is_served(credit_app):
    base = credit_app["base"]
    res = optimize(credit_app["yaml"], "onnx", version=base.version)
    details, table = res["details"], res["table"]
    assert details["agreement"] >= 0.999 and details["agreement_goal_met"]
    assert details["max_abs_probability_diff"] < 1e-5
    assert set(details["max_abs_diff_by_part"]) == {"lightgbm", "mlp", "linear", "forest"}
    assert details["faster_batch1"] == (details["batch1_ms"]["onnx"] < details["batch1_ms"]["original"])
    assert "note" in details or details["faster_batch1"]  # not faster: it says so
    assert table["rows"]["optimized"]["agreement"] >= 0.999
    assert table["rows"]["optimized"]["parameters"] > 0

    run = get_run("opt-credit", res["run"]["version"])
    verify_manifest(run.path)
    assert (run.path / "ensemble.onnx").exists()
    assert not list(run.path.rglob("mlp.safetensors")) and not list(run.path.rglob("forest.onnx"))
    assert json.loads((run.path / "preprocess.json").read_text())["onnx"]["graph"] == "ensemble.onnx"

    task = api.load_predictor("opt-credit", run.version).task
    assert task.ensemble is not None and all(m.mlp is None and not m.sk for m in task.members)
    _, valid = task.split(task.read(None))
    records = task.records_of(valid)[:60]
    records += [  # missing numbers (NaN paths of every tree) and categories never seen (LightGBM's NaN code)
        {**records[0], "duration": None, "credit_amount": None, "purpose": "A999"},
        {**records[1], "age": None, "checking_status": None, "housing": "unknown"},
    ]
    want = api.predict("opt-credit", records, version=base.version)
    got = api.predict("opt-credit", records, version=run.version)
    for a, b in zip(want, got, strict=True):
        assert a["label"] == b["label"]
        assert b["probability"] == pytest.approx(a["probability"], abs=1e-4)
    # explanations still work (TreeSHAP reads the kept LightGBM text files) and match the original's
    for a, b in zip(*(api.predict("opt-credit", records[-3:], version=v, explain=True)
                      for v in (base.version, run.version)), strict=True):
        ea, eb = a["explanation"], b["explanation"]
        assert eb["method"] == ea["method"] == "shap+ablation" and eb["base"] == pytest.approx(ea["base"], abs=1e-4)
        ours, theirs = ({f["feature"]: f["effect"] for f in e["effects"]} for e in (eb, ea))
        assert max(abs(ours.get(f, 0.0) - theirs.get(f, 0.0)) for f in {*ours, *theirs}) < 1e-4

    with pytest.raises(ConfigError, match="already predicts with ONNX"):
        optimize(credit_app["yaml"], "onnx", version=run.version)


def test_unknown_method_is_refused(credit_app):
    with pytest.raises(ConfigError, match="onnx, distill") as err:
        optimize(credit_app["yaml"], "int8", version=credit_app["base"].version)
    assert err.value.param == "method"


def _odd_records(records):
    """Missing numbers (NaN paths of every tree), categories never seen, ranks and indicators missing."""
    return [
        {**records[0], "duration": None, "credit_amount": None, "purpose": "A999"},
        {**records[1], "age": None, "checking_status": None, "housing": "unknown", "savings": "A6x"},
    ]


@pytest.fixture(scope="module")
def student(credit_app):
    base = credit_app["base"]
    return optimize(credit_app["yaml"], "distill", version=base.version)


def test_distilled_student_replaces_the_ensemble_and_serves(credit_app, student):
    base = credit_app["base"]
    details, table = student["details"], student["table"]
    assert student["methods"] == ["distill"] and details["teacher"] == "served"
    assert details["synthetic_rows"] == details["training_rows"] > 0
    assert details["teacher_agreement_train"] >= 0.9
    rows = table["rows"]
    assert rows["optimized"]["agreement"] >= 0.85  # the teacher's decisions on the validation rows
    assert rows["optimized"]["quality"] >= 0.9 * rows["baseline"]["quality"]  # roc_auc
    assert rows["optimized"]["p50_ms"] > 0 and rows["optimized"]["parameters"] == details["student"]["parameters"]

    run = get_run("opt-credit", student["run"]["version"])
    verify_manifest(run.path)
    assert not list(run.path.glob("member*")) and not list(run.path.glob("*.onnx"))
    assert (run.path / "mlp.safetensors").exists() and not (run.path / "checkpoint").exists()
    meta = json.loads((run.path / "preprocess.json").read_text())
    assert meta["model_type"] == "mlp" and meta["members"] == 0 and meta["calibration"] is None
    task = api.load_predictor("opt-credit", run.version).task
    _, valid = task.split(task.read(None))
    records = task.records_of(valid)[:40]
    records += _odd_records(records)
    got = api.predict("opt-credit", records, version=run.version)
    want = api.predict("opt-credit", records, version=base.version)
    assert all(abs(sum(g["probabilities"].values()) - 1) < 1e-6 for g in got)
    close = [abs(g["probabilities"]["bad"] - w["probabilities"]["bad"]) for g, w in zip(got, want, strict=True)]
    assert sum(close) / len(close) < 0.12  # mean gap of the probability of default to the teacher's
    explained = api.predict("opt-credit", records[-2:], version=run.version, explain=True)
    assert all(e["explanation"]["effects"] for e in explained)  # ablation (no trees left for TreeSHAP)


def test_distill_then_onnx(credit_app, student):
    res = optimize(credit_app["yaml"], "onnx", version=student["run"]["version"])
    assert res["methods"] == ["distill", "onnx"]
    assert res["details"]["agreement"] >= 0.999 and res["details"]["max_abs_probability_diff"] < 1e-5
    run = get_run("opt-credit", res["run"]["version"])
    assert (run.path / "ensemble.onnx").exists() and not (run.path / "mlp.safetensors").exists()
    assert res["table"]["rows"]["optimized"]["agreement"] >= 0.999


def _bundle_matches_luodi(app_yaml, version, records, out):
    res = export(app_yaml, out, version=version)
    assert set(res["files"]) == {"README.md", "model.onnx", "preprocess.json", "predict.py"}
    assert len((out / "predict.py").read_text().splitlines()) <= 50
    features = json.loads((out / "preprocess.json").read_text())["features"]
    rows = out.parent / f"rows-{version}.csv"
    with rows.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=features)
        w.writeheader()
        w.writerows({c: "" if r[c] is None else r[c] for c in features} for r in records)
    proc = subprocess.run(  # a clean interpreter that imports nothing of luodi
        [sys.executable, "-I", str(out / "predict.py"), str(rows)],
        capture_output=True, text=True, timeout=120, cwd=out.parent,
    )
    assert proc.returncode == 0, proc.stderr
    got = [json.loads(line) for line in proc.stdout.splitlines()]
    want = api.predict("opt-credit", records, version=version)
    assert [g["label"] for g in got] == [w["label"] for w in want]
    for g, w in zip(got, want, strict=True):
        for label, p in w["probabilities"].items():
            assert g["probabilities"][label] == pytest.approx(p, abs=1e-5)


def test_exported_bundle_predicts_like_luodi(credit_app, student, tmp_path):
    base = credit_app["base"]
    task = api.load_predictor("opt-credit", base.version).task
    _, valid = task.split(task.read(None))
    records = task.records_of(valid)[:80]
    records += _odd_records(records)
    # the whole cross-fitted ensemble (ranks, the coding's indicators, one-hots, a calibrator), then the student
    _bundle_matches_luodi(credit_app["yaml"], base.version, records, tmp_path / "ensemble")
    _bundle_matches_luodi(credit_app["yaml"], student["run"]["version"], records, tmp_path / "student")
    readme = (tmp_path / "ensemble" / "README.md").read_text()
    assert "onnxruntime numpy" in readme and "credit_amount" in readme
