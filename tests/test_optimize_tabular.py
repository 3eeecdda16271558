"""luodi optimize --method onnx on a small credit-risk-like app (2 cross-fitted members of LightGBM, an MLP on the
compact coding, a linear model and a forest): the whole ensemble as one ONNX graph agrees with the original,
is served like any run (same labels and probabilities, also for missing values and unseen categories), still
explains, and unknown or repeated methods are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from luodi import api
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
    cfg["optimize"] = {"calibration_rows": 64, "latency_rows": 20, "throughput_rows": 64}
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
    with pytest.raises(ConfigError, match="onnx") as err:
        optimize(credit_app["yaml"], "int8", version=credit_app["base"].version)
    assert err.value.param == "method"
