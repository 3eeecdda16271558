"""Anomaly detection: isolation forest stored as arrays matches scikit-learn, autoencoder on synthetic data,
the hybrid model on an NSL-KDD slice evaluated on a KDDTest+-format file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from luodi import api
from luodi.tasks.anomaly import IsolationForestArrays

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_isolation_forest_arrays_match_sklearn():
    from sklearn.ensemble import IsolationForest

    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 4))
    ours = IsolationForestArrays.fit(x, 50, 128, seed=3)
    ref = IsolationForest(n_estimators=50, max_samples=128, random_state=3).fit(x)
    q = np.vstack([rng.normal(size=(50, 4)), rng.normal(size=(10, 4)) * 6])
    np.testing.assert_allclose(ours.score(q), -ref.score_samples(q), rtol=1e-9)
    back = IsolationForestArrays.from_tensors(ours.tensors(), ours.max_samples)
    np.testing.assert_allclose(back.score(q), ours.score(q))


def synthetic(tmp_path: Path) -> tuple[pd.DataFrame, Path]:
    """1500 normal rows on 2 latent factors + 60 structureless ones of the same scale, as a csv."""
    rng = np.random.default_rng(1)
    w = rng.normal(size=(2, 6))
    normal = rng.normal(size=(1500, 2)) @ w + rng.normal(scale=0.05, size=(1500, 6))  # 2 latent factors
    odd = rng.normal(size=(60, 6)) * normal.std(0)  # same scale, no structure
    df = pd.DataFrame(np.vstack([normal, odd]), columns=[f"f{i}" for i in range(6)])
    df["kind"] = ["normal"] * 1500 + ["odd"] * 60
    df["proto"] = rng.choice(["tcp", "udp"], size=len(df))
    f = tmp_path / "d.csv"
    df.to_csv(f, index=False)
    return df, f


@pytest.mark.parametrize("kind", ["autoencoder", "isolation-forest"])
def test_unsupervised_detectors_find_outliers(tmp_path, kind):
    df, f = synthetic(tmp_path)
    cfg = {
        "name": f"t-anom-{kind}",
        "task": "anomaly-detection",
        "data": {"path": str(f), "columns": {"label": "kind"}, "split": {"valid": 0.3, "seed": 0}},
        "model": {"type": kind, "options": {"quantile": 0.97, "ae_hidden": [8, 2], "trees": 100}},
        "train": {"epochs": 40, "lr": 0.01, "batch_size": 64, "early_stopping": 5},
    }
    run = api.train(cfg, progress=False)
    key = "roc_auc_" + kind.replace("-", "_")
    assert run.metrics[key] > (0.9 if kind == "autoencoder" else 0.6)
    assert run.metrics["false_positive_rate"] < 0.08
    out = api.predict(cfg["name"], df.drop(columns="kind").iloc[[0, 1550]].to_dict(orient="records"))
    assert set(out[0]) == {"label", "is_anomaly", "anomaly_score", "scores"}
    # explain: effects on the anomaly score; the odd row's numbers push it up, its protocol hardly matters
    odd = api.predict(cfg["name"], df.drop(columns="kind").iloc[[1550]].to_dict(orient="records"), explain=True)[0]
    effects = odd["explanation"]["effects"]
    assert odd["explanation"]["target"] == "anomaly_score" and effects[0]["feature"].startswith("f")
    assert sum(e["effect"] for e in effects if e["feature"] != "proto") > 0


def test_autoencoder_resumes_after_interruption(tmp_path):
    """The autoencoder trains on the shared torch loop: interrupted at epoch 2, resumed from its checkpoint."""
    from luodi.apps import registry

    _, f = synthetic(tmp_path)
    cfg = {
        "name": "t-anom-resume",
        "task": "anomaly-detection",
        "data": {"path": str(f), "columns": {"label": "kind"}, "split": {"valid": 0.3, "seed": 0}},
        "model": {"type": "autoencoder", "options": {"quantile": 0.97, "ae_hidden": [8, 2]}},
        "train": {"epochs": 6, "lr": 0.01, "batch_size": 64, "early_stopping": None},
    }
    seen: list[int] = []

    def stop_at_two(epoch, logs):
        seen.append(epoch)
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        api.train(cfg, progress=False, callbacks=[stop_at_two])
    assert registry.list_runs("t-anom-resume")[0].status == "interrupted"
    seen.clear()
    run = api.train(cfg, progress=False, resume=True, callbacks=[lambda e, logs: seen.append(e)])
    assert run.status == "done" and seen == [3, 4, 5, 6]
    hist = json.loads((run.path / "anomaly.json").read_text())["history"]
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4, 5, 6] and hist[0]["stage"] == "autoencoder"
    straight = api.train({**cfg, "name": "t-anom-straight"}, progress=False)  # same run, not interrupted
    assert run.metrics["roc_auc_autoencoder"] == pytest.approx(straight.metrics["roc_auc_autoencoder"])
    assert run.metrics["roc_auc_autoencoder"] > 0.75


def test_hybrid_on_nsl_kdd_slice_and_kddtest_format(datasets_dir, tmp_path):
    lines = (datasets_dir / "nsl-kdd" / "KDDTrain+_20Percent.txt").read_text().splitlines()
    train = tmp_path / "kdd-train.txt"
    train.write_text("\n".join(lines[:5000]) + "\n")
    test = tmp_path / "KDDTest+.txt"  # same 43 columns as KDDTrain+, difficulty included
    test.write_text("\n".join(lines[20000:22000]) + "\n")
    cfg = yaml.safe_load((EXAMPLES / "intrusion-detection.yaml").read_text())
    cfg["name"] = "t-ids"
    cfg["data"]["path"] = str(train)
    cfg["model"]["options"]["classifier"] = {"n_estimators": 60}
    cfg["train"]["epochs"] = 5
    cfg["evaluate"].pop("goal", None)
    cfg["evaluate"]["metrics"] = ["accuracy", "roc_auc"]
    p = tmp_path / "ids.yaml"
    p.write_text(yaml.safe_dump(cfg))
    run = api.train(p, progress=False)
    assert run.metrics["accuracy"] > 0.85 and "unseen_recall" in run.metrics
    assert (run.path / "classifier" / "model.lgb.txt").exists() and (
        run.path / "autoencoder.safetensors"
    ).exists()
    res = api.evaluate(p, data=str(test))
    assert res["metrics"]["n"] == 2000 and res["metrics"]["accuracy"] > 0.85


@pytest.mark.skipif(os.environ.get("LUODI_SLOW") != "1", reason="full dataset training: set LUODI_SLOW=1")
def test_full_intrusion_example(datasets_dir):
    run = api.train(EXAMPLES / "intrusion-detection.yaml", progress=False)
    assert run.metrics["accuracy"] >= 0.9 and run.metrics["unseen_recall"] >= 0.5


def test_bad_options_name_the_key():
    """model.options are checked when the app is loaded: unknown detectors, out-of-range numbers, the hybrid's
    classifier options (a tabular app's) are errors naming the key."""
    from luodi.errors import ConfigError

    base = {"name": "t-anom-bad", "task": "anomaly-detection"}
    for options, message in (
        ({"detectors": ["lof"]}, r"'model\.options\.detectors\.0': Input should be 'autoencoder' or"),
        ({"quantile": 1.5}, r"'model\.options\.quantile': Input should be less than or equal to 1"),
        ({"classifier": {"num_leaves": 1}}, r"'model\.options\.classifier\.num_leaves': Input should be greater"),
        ({"classifier_type": "xgboost"}, r"'model\.options\.classifier_type': Input should be 'lightgbm'"),
        ({"tree": 10}, r"unknown key 'model\.options\.tree' — expected one of normal, attack_label"),
    ):
        with pytest.raises(ConfigError, match=message):
            api.load_app({**base, "model": {"type": "hybrid", "options": options}})
