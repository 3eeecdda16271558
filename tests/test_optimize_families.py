"""luodi optimize --method onnx for speech-recognition (the CNN ensemble), anomaly-detection (the autoencoder) and
recommendation (the BPMF towers), each on a tiny app trained in seconds (the configs of test_task_conformance):
the table's agreement with the base run, the check against the model it replaces, the run's manifest, the
replaced weights gone, the run served after `promote` with the base run's predictions, and the refusal where a
model type holds no neural model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import test_task_conformance as conformance

from luodi import api
from luodi.apps.optimize import optimize
from luodi.apps.registry import get_run, verify_manifest
from luodi.apps.runs import promote
from luodi.errors import ConfigError

OPTIMIZE = {"calibration_rows": 64, "latency_rows": 10, "throughput_rows": 32}


def speech(d: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Conformance's speech app (2 speakers x 2 words), as an ensemble of 2 CNNs; every held-out recording and a
    raw waveform to predict."""
    cfg, *_ = conformance.speech_recognition(d)
    cfg["model"]["options"]["ensemble"] = 2
    records = [{"path": str(p)} for p in sorted((d / "wav").glob("*_bob_*.wav"))]
    records.append({"audio": (0.3 * np.sin(np.arange(2400) / 3)).tolist(), "sample_rate": 8000})
    return cfg, records


def anomaly_table(d: Path) -> pd.DataFrame:
    """Conformance's anomaly table (300 normal rows, 20 odd ones), written to d / a.csv."""
    conformance.anomaly(d)
    return pd.read_csv(d / "a.csv")


def anomaly(d: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    df = anomaly_table(d)
    cfg = {
        "data": {"path": str(d / "a.csv"), "columns": {"label": "kind"}, "split": {"valid": 0.3, "seed": 0}},
        "model": {"type": "autoencoder", "options": {"ae_hidden": [8, 2]}},
        "train": {"epochs": 5, "batch_size": 32, "lr": 0.01},
    }
    return cfg, df.drop(columns="kind").iloc[[0, 5, 100, 305, 310, 319]].to_dict("records")


def recommendation(d: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    cfg, *_ = conformance.recommendation(d)
    records = [{"user_id": "3", "k": 4}, {"user_id": "7", "k": 25, "exclude_seen": False},
               {"user_id": "1", "item_id": "2"}, {"user_id": "somebody new", "k": 3},
               {"user_id": "somebody new", "item_id": "4"}, {"user_id": "5", "item_id": "no such item"}]
    return cfg, records


# family: (app maker, the graph in the optimized run, the weights it replaces, the check's key in the details)
FAMILIES = {
    "speech-recognition": (speech, "model.onnx", "model.safetensors", "float32_vs_torch"),
    "anomaly-detection": (anomaly, "autoencoder.onnx", "autoencoder.safetensors", "float32_vs_torch"),
    "recommendation": (recommendation, "recommender.onnx", None, "graph_vs_numpy"),
}


def same(a: Any, b: Any) -> bool:
    """Equal predictions: the same labels, item lists and flags, numbers within 1e-4."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-4
    return a == b


@pytest.mark.parametrize("task", list(FAMILIES))
def test_onnx_run_agrees_and_is_served(task, tmp_path):
    make, graph, replaced, check_key = FAMILIES[task]
    cfg, records = make(tmp_path)
    name = f"optfam-{task}"
    app = {"name": name, "task": task, **cfg, "train": {"epochs": 2, "seed": 0, **cfg.get("train", {})},
           "optimize": OPTIMIZE}
    base = api.train(app, progress=False)
    want = api.predict(name, records, version=base.version)

    res = optimize(app, "onnx", version=base.version)
    check = res["details"][check_key]
    assert check["agreement"] >= 0.99 and check["max_abs_diff"] < 1e-4, check
    rows = res["table"]["rows"]
    assert rows["optimized"]["agreement"] >= 0.99, rows
    assert rows["optimized"]["parameters"] > 0 and rows["optimized"]["p50_ms"] > 0
    assert rows["optimized"]["quality"] == pytest.approx(rows["baseline"]["quality"], abs=1e-3)

    run = get_run(name, res["run"]["version"])
    verify_manifest(run.path)
    assert (run.path / graph).exists()
    assert replaced is None or not (run.path / replaced).exists()
    promote(name, run.version)
    loaded = api.load_predictor(name)
    assert loaded.task.parameter_count() == rows["optimized"]["parameters"]
    got = api.predict(name, records)  # the served (promoted) run
    assert same(want, got), (want, got)
    if task == "recommendation":  # the towers really left the numpy model: only ONNX scores
        assert loaded.task.towers is not None and loaded.task.users is None
    with pytest.raises(ConfigError, match="already predicts with ONNX") as err:  # nothing is exported twice
        optimize(app, "onnx", version=run.version)
    assert err.value.param == "method"
    print(task, res["details"], {k: rows["optimized"][k] for k in ("agreement", "size_mb", "parameters")},
          res["table"]["ratios"], {k: rows["baseline"][k] for k in ("size_mb", "parameters")})


def test_anomaly_without_a_neural_model_is_refused(tmp_path):
    anomaly_table(tmp_path)
    app = {"name": "optfam-iforest", "task": "anomaly-detection", "optimize": OPTIMIZE,
           "data": {"path": str(tmp_path / "a.csv"), "columns": {"label": "kind"}, "split": {"valid": 0.3}},
           "model": {"type": "isolation-forest", "options": {"trees": 20, "max_samples": 64}}}
    api.train(app, progress=False)
    with pytest.raises(ConfigError, match="isolation forest") as err:
        optimize(app, "onnx")
    assert err.value.param == "model.type" and "model.type autoencoder" in err.value.message
    with pytest.raises(ConfigError) as err:
        optimize(app, "int8")
    assert err.value.param == "method" and "onnx" in err.value.message


def test_speech_embedding_is_refused_naming_the_model_type(tmp_path):
    cfg, _ = speech(tmp_path)
    app = {"name": "optfam-embedding", "task": "speech-recognition", "optimize": OPTIMIZE,
           **cfg, "model": {"type": "speech-embedding"}}
    api.train(app, progress=False)
    with pytest.raises(ConfigError, match="model.type cnn") as err:
        optimize(app, "onnx")
    assert err.value.param == "model.type"
