"""Fairness: per-group metrics and differences (luodi.evaluate.fairness), per-group thresholds
(train.fairness, luodi.tasks.tabular.fairness) and the audit section, on tiny data with a known group gap."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from luodi import api
from luodi.audit.fairness import section
from luodi.config import config_fingerprint, validate_app
from luodi.errors import BadRequest, ConfigError
from luodi.evaluate.fairness import (
    _gaps,
    bootstrap_differences,
    differences,
    group_labels,
    group_table,
)
from luodi.tasks.tabular.fairness import GroupRates, GroupThresholds, fit_gaps, joint_search, search, tolerances_of

# two groups of four rows: a selects 2 (TPR 1/2, FPR 1/2), b selects 1 (TPR 0, FPR 1/3)
Y = np.array([1, 1, 0, 0, 1, 0, 0, 0])
PRED = np.array([1, 0, 1, 0, 0, 0, 1, 0])
PROBA = np.array([0.9, 0.4, 0.6, 0.1, 0.3, 0.2, 0.7, 0.2])
GROUPS = np.array(["a"] * 4 + ["b"] * 4)


def test_group_labels_bin_numbers_and_keep_missing():
    assert group_labels([18, 25, 40.5, None], [25]).tolist() == ["< 25", ">= 25", ">= 25", "missing"]
    assert group_labels([10, 30, 70], [25, 65]).tolist() == ["< 25", "25 to < 65", ">= 65"]
    assert group_labels(["f", " m", None]).tolist() == ["f", "m", "missing"]
    with pytest.raises(ValueError, match="bins need numbers"):
        group_labels(["young"], [25])


def test_group_table_matches_hand_computation():
    rows = {r["group"]: r for r in group_table(Y, PRED, PROBA, GROUPS)}
    a, b = rows["a"], rows["b"]
    assert (a["count"], b["count"]) == (4, 4)
    assert a["selection_rate"] == 0.5 and b["selection_rate"] == 0.25
    assert a["tpr"] == 0.5 and b["tpr"] == 0.0
    assert a["fpr"] == 0.5 and b["fpr"] == pytest.approx(1 / 3)
    assert a["accuracy"] == 0.5 and b["accuracy"] == 0.5
    assert a["mean_probability"] == pytest.approx(0.5) and a["positive_rate"] == 0.5
    assert b["mean_probability"] == pytest.approx(0.35) and b["calibration_gap"] == pytest.approx(0.35 - 0.25)


def test_differences_match_hand_computation_and_the_fast_path():
    d = differences(Y, PRED, GROUPS)
    assert d["demographic_parity_difference"] == pytest.approx(0.25)
    assert d["equalized_odds_difference"] == pytest.approx(0.5)  # max(TPR gap 1/2, FPR gap 1/6)
    codes = (GROUPS == "b").astype(int)
    assert _gaps(Y.astype(float), PRED.astype(float), codes, 2) == pytest.approx((0.25, 0.5))


def gapped(n: int = 1500, seed: int = 0, shift: float = 0.8) -> pd.DataFrame:
    """A table whose label (and so any good model's selections) leans on the group column."""
    rng = np.random.default_rng(seed)
    group = rng.choice(["a", "b"], n, p=[0.7, 0.3])
    x1 = rng.normal(size=n) + np.where(group == "a", shift, -shift)
    x2 = rng.normal(size=n)
    y = np.where(x1 - x2 + rng.normal(scale=0.7, size=n) > 0, "good", "bad")
    return pd.DataFrame({"x1": x1, "x2": x2, "group": group, "y": y})


def test_bootstrap_intervals_contain_the_point_and_are_seeded():
    df = gapped(600)
    y, pred = (df["y"] == "good").to_numpy(), (df["x1"] > 0).to_numpy()
    ci = bootstrap_differences(y, pred, df["group"], resamples=100, seed=3)
    for d in ci.values():
        assert d["low"] <= d["value"] <= d["high"]
        assert d["high"] - d["low"] > 0  # 600 rows: the gap is uncertain
    assert ci["demographic_parity_difference"]["value"] > 0.3  # the known gap
    assert bootstrap_differences(y, pred, df["group"], resamples=100, seed=3) == ci


def test_search_closes_the_selection_gap_on_its_rows():
    rng = np.random.default_rng(1)
    groups = np.array(["a"] * 300 + ["b"] * 200)
    scores = np.r_[rng.uniform(0.3, 1, 300), rng.uniform(0, 0.7, 200)]
    y = (rng.uniform(size=500) < scores).astype(int)
    th = search(scores, y, groups, "demographic_parity", 0.01)
    rates = [np.mean(scores[groups == g] >= th[g]) for g in ("a", "b")]
    assert abs(rates[0] - rates[1]) <= 0.01
    assert 0 < rates[0] < 1  # a real decision, not "select nobody"


@pytest.fixture(scope="module")
def fair_app(tmp_path_factory) -> dict:
    """An app trained with train.fairness (demographic parity by group; group is not a model feature)."""
    d = tmp_path_factory.mktemp("fair")
    gapped().to_csv(d / "g.csv", index=False)
    app = {
        "name": "fair-thresholds",
        "task": "tabular",
        "data": {
            "path": str(d / "g.csv"),
            "columns": {"label": "y", "positive": "good", "drop": ["group"]},
            "split": {"valid": 0.3, "seed": 0},
        },
        "model": {"type": "lightgbm", "options": {"n_estimators": 40, "min_child_samples": 5, "inner_folds": 3}},
        "train": {"lr": 0.1, "fairness": {"constraint": "demographic_parity", "sensitive": "group"}},
        "evaluate": {"fairness": {"sensitive": ["group"], "resamples": 50}},
    }
    api.train(app, progress=False)
    return app


def test_mitigation_reduces_the_gap_with_the_models_probabilities(fair_app):
    pred = api.load_predictor("fair-thresholds")  # loaded from disk: the thresholds went through preprocess.json
    task = pred.task
    _, valid = task.split(task.read(None))
    p = task.predict_proba(valid)
    y = task._target(valid) == task.positive
    plain = p.argmax(1) == task.positive
    fair = task._decisions(valid, p) == task.positive
    before = differences(y, plain, valid["group"])["demographic_parity_difference"]
    after = differences(y, fair, valid["group"])["demographic_parity_difference"]
    assert before > 0.3 and after < before / 3
    out = api.predict("fair-thresholds", valid.head(20).to_dict("records"))
    for o, row in zip(out, p[:20], strict=True):
        assert o["probabilities"]["good"] == pytest.approx(row[task.positive])  # the probability stays the model's


def test_mitigated_predictions_are_the_same_twice(fair_app):
    records = gapped(50, seed=7).drop(columns="y").to_dict("records")
    assert api.predict("fair-thresholds", records) == api.predict("fair-thresholds", records)


def test_predict_without_the_sensitive_column_names_it(fair_app):
    with pytest.raises(BadRequest, match="'group'") as e:
        api.predict("fair-thresholds", [{"x1": 0.1, "x2": 0.0}])
    assert e.value.param == "group"


def test_http_schema_accepts_the_sensitive_column_that_is_not_a_feature(fair_app):
    task = api.load_predictor("fair-thresholds").task
    aliases = {f.alias for f in task.input_model().model_fields.values()}
    assert aliases == {"x1", "x2", "group"}


def test_fairness_on_a_multiclass_label_is_a_config_error(tmp_path):
    df = gapped(300)
    df["y"] = np.where(df["x1"] > 0.5, "hi", np.where(df["x1"] < -0.5, "lo", "mid"))
    df.to_csv(tmp_path / "m.csv", index=False)
    app = {
        "name": "fair-multiclass",
        "task": "tabular",
        "data": {"path": str(tmp_path / "m.csv"), "columns": {"label": "y"}},
        "model": {"type": "lightgbm", "options": {"n_estimators": 10}},
        "train": {"fairness": {"constraint": "equalized_odds", "sensitive": "group"}},
    }
    with pytest.raises(ConfigError, match="train.fairness"):
        api.train(app, progress=False)


def test_audit_section_reports_groups_and_intervals(fair_app):
    pred = api.load_predictor("fair-thresholds")
    train, valid = pred.task.split(pred.task.read(None))
    sec = section(pred, train, valid)
    assert sec.status == "ok" and "<img" in sec.html
    by = sec.numbers["columns"]["group"]
    assert {g["group"] for g in by["groups"]} == {"a", "b"}
    dp = by["demographic_parity_difference"]
    assert dp["low"] <= dp["value"] <= dp["high"]
    assert sec.numbers["mitigation"]["constraint"] == "demographic_parity"
    with pytest.raises(ConfigError, match="'nope'"):
        section(pred, train, valid, sensitive="nope")
    binned = section(pred, train, valid, sensitive="x1:0")  # cut points after a colon group a numeric column
    assert {g["group"] for g in binned.numbers["columns"]["x1"]["groups"]} == {"< 0", ">= 0"}
    with pytest.raises(ConfigError, match="bins"):
        section(pred, train, valid, sensitive="x1")  # numeric, many values, no cut points


def test_audit_section_skips_apps_that_are_not_tables():
    pred = SimpleNamespace(config=SimpleNamespace(task="text-classification"), task=None)
    sec = section(pred, None, None, sensitive=["sex"])
    assert sec.status == "skipped" and "tabular" in sec.note


def test_http_predict_needs_the_sensitive_column(fair_app):
    from fastapi.testclient import TestClient

    from luodi.serve.app import create_app
    from luodi.settings import get_settings

    app = create_app(get_settings().model_copy(update={"auth": "off"}), preload=False)
    with TestClient(app) as c:
        ok = c.post("/v1/apps/fair-thresholds/predict", json={"x1": 0.2, "x2": 0.1, "group": "b"})
        assert ok.status_code == 200, ok.text
        assert ok.json() == c.post("/v1/apps/fair-thresholds/predict", json={"x1": 0.2, "x2": 0.1, "group": "b"}).json()
        bad = c.post("/v1/apps/fair-thresholds/predict", json={"x1": 0.2, "x2": 0.1})
        # the typed schema refuses it as it refuses any missing field: 422, naming it
        assert bad.status_code == 422 and bad.json()["error"]["param"] == "group"


# --- the joint mode: both constraints at once, a tolerance each -----------------------------------------------

BOTH = {"demographic_parity": 0.02, "equalized_odds": 0.05}


def scored(n: int = 2000, k: int = 2, seed: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Calibrated-looking scores whose groups differ in base rate (the case where the two constraints pull apart)."""
    rng = np.random.default_rng(seed)
    groups = rng.choice(np.array(["a", "b", "c"][:k]), n, p=[0.6, 0.4, 0.0][:k] if k == 2 else [0.5, 0.3, 0.2])
    shift = {"a": 0.15, "b": -0.05, "c": 0.05}
    scores = np.clip(rng.beta(2, 3, n) + np.array([shift[g] for g in groups]), 0, 1)
    return scores, (rng.uniform(size=n) < scores).astype(int), groups


@pytest.mark.parametrize("k", [2, 3])
def test_joint_search_meets_both_tolerances_on_its_rows(k):
    scores, y, groups = scored(k=k)
    th = joint_search(scores, y, groups, BOTH)
    gaps = fit_gaps(scores, y, groups, th)
    assert gaps["demographic_parity"] <= 0.02 + 1e-9 and gaps["equalized_odds"] <= 0.05 + 1e-9
    chosen = scores >= np.array([th[g] for g in groups])
    assert 0.1 < chosen.mean() < 0.9  # a real decision, not "select nobody"
    assert joint_search(scores, y, groups, BOTH) == th  # deterministic


@pytest.mark.parametrize("seed", range(6))
def test_joint_search_is_the_most_accurate_pair_within_both(seed):
    """Two groups: no pair of thresholds, tried by brute force, is more accurate within both tolerances (scores
    rounded, so many rows share one)."""
    scores, y, groups = scored(300, seed=seed)
    scores = np.round(scores, 2)
    tol = {"demographic_parity": [0.0, 0.02, 0.05][seed % 3], "equalized_odds": [0.05, 0.1][seed % 2]}
    th = joint_search(scores, y, groups, tol)
    a, b = (GroupRates.of(scores[groups == g], y[groups == g]) for g in ("a", "b"))
    dp = np.abs(a.selected[:, None] / a.n - b.selected[None, :] / b.n)
    eo = np.maximum(np.abs(a.tpr[:, None] - b.tpr[None, :]), np.abs(a.fpr[:, None] - b.fpr[None, :]))
    within = (dp <= tol["demographic_parity"] + 1e-12) & (eo <= tol["equalized_odds"] + 1e-12)
    best = np.where(within, a.correct[:, None] + b.correct[None, :], -1).max()
    chosen = scores >= np.array([th[g] for g in groups])
    assert int(np.sum(chosen == y)) == best


def test_tolerances_of_reads_both_config_forms():
    assert tolerances_of("equalized_odds", 0.03) == {"equalized_odds": 0.03}
    assert tolerances_of(["demographic_parity", "equalized_odds"], 0.02) == {
        "demographic_parity": 0.02, "equalized_odds": 0.02}
    assert tolerances_of(["demographic_parity", "equalized_odds"], BOTH) == BOTH


def fairness_config(fairness: dict) -> Any:
    return validate_app({"name": "x", "task": "tabular", "data": {"path": "a.csv", "columns": {"label": "y"}},
                         "train": {"fairness": fairness}})


@pytest.mark.parametrize(
    ("fairness", "message"),
    [
        ({"constraint": ["demographic_parity", "equalized_odds"], "tolerance": {"demographic_parity": 0.02,
          "accuracy": 0.05}}, "'train.fairness.tolerance': 'accuracy' is not one of the constraints"),
        ({"constraint": ["demographic_parity", "equalized_odds"], "tolerance": {"demographic_parity": 0.02}},
         "'train.fairness.tolerance': no tolerance for 'equalized_odds'"),
        ({"constraint": ["demographic_parity", "parity"]}, "'train.fairness.constraint': 'parity' is not a constraint"),
        ({"constraint": ["equalized_odds", "equalized_odds"]}, "'train.fairness.constraint': a list of distinct"),
        ({"constraint": []}, "'train.fairness.constraint'"),
        ({"constraint": "demographic_parity", "tolerance": 1.5}, "'train.fairness.tolerance': a tolerance is"),
        ({"constraint": ["demographic_parity", "equalized_odds"], "tolerance": {"demographic_parity": 0.02,
          "equalized_odds": -1}}, "'train.fairness.tolerance'"),
    ],
)
def test_bad_joint_config_names_the_field(fairness, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        fairness_config({"sensitive": "s", **fairness})


def test_the_single_constraint_form_keeps_its_fingerprint():
    """Stored configs with one constraint hash as before the joint mode (the value of the previous release)."""
    cfg = fairness_config({"constraint": "demographic_parity", "sensitive": "s"})
    assert config_fingerprint(cfg) == "4758930fc71b1ac3"
    assert cfg.train.fairness.tolerances() == {"demographic_parity": 0.01}
    both = fairness_config({"constraint": ["demographic_parity", "equalized_odds"], "sensitive": "s",
                            "tolerance": BOTH})
    assert both.train.fairness.tolerances() == BOTH


def test_thresholds_stored_before_the_joint_mode_still_load():
    old = {"sensitive": "sex", "constraint": "equalized_odds", "bins": None, "thresholds": {"f": 0.4, "m": 0.6},
           "fallback": 0.5}
    th = GroupThresholds.from_json(old)
    assert th.tolerance is None and th.selected(pd.DataFrame({"sex": ["f", "m"]}), np.array([0.5, 0.5])).tolist() \
        == [True, False]


@pytest.fixture(scope="module")
def joint_app(tmp_path_factory) -> dict:
    """An app trained with both constraints at once (group is not a model feature)."""
    d = tmp_path_factory.mktemp("joint")
    gapped(shift=0.3).to_csv(d / "g.csv", index=False)  # a smaller gap: both constraints leave real decisions
    app = {
        "name": "fair-joint",
        "task": "tabular",
        "data": {
            "path": str(d / "g.csv"),
            "columns": {"label": "y", "positive": "good", "drop": ["group"]},
            "split": {"valid": 0.3, "seed": 0},
        },
        "model": {"type": "lightgbm", "options": {"n_estimators": 40, "min_child_samples": 5, "inner_folds": 3}},
        "train": {"lr": 0.1, "fairness": {"constraint": ["demographic_parity", "equalized_odds"],
                                          "sensitive": "group", "tolerance": {"demographic_parity": 0.03,
                                                                              "equalized_odds": 0.06}}},
        "evaluate": {"fairness": {"sensitive": ["group"], "resamples": 50}},
    }
    api.train(app, progress=False)
    return app


def test_joint_app_meets_both_on_its_fitting_rows_and_answers_the_same_twice(joint_app):
    pred = api.load_predictor("fair-joint")  # through preprocess.json
    m = pred.task.fairness.to_json()
    assert m["constraint"] == ["demographic_parity", "equalized_odds"]
    assert m["tolerance"] == {"demographic_parity": 0.03, "equalized_odds": 0.06}
    assert m["fit_gaps"]["demographic_parity"] <= 0.03 and m["fit_gaps"]["equalized_odds"] <= 0.06
    records = gapped(60, seed=9).drop(columns="y").to_dict("records")
    out = api.predict("fair-joint", records)
    assert out == api.predict("fair-joint", records)
    assert len({o["label"] for o in out}) == 2  # a real decision
    train, valid = pred.task.split(pred.task.read(None))
    sec = section(pred, train, valid)
    assert "demographic parity within 0.03" in sec.html and "equalized odds within 0.06" in sec.html
    assert sec.numbers["mitigation"]["tolerance"] == m["tolerance"]
