"""Tabular task on slices of real datasets (original formats), plus regression, multiclass, balancing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from luodi import api
from luodi.data.balance import class_weights, resample
from luodi.errors import BadRequest, ConfigError

SLOW = pytest.mark.skipif(
    os.environ.get("LUODI_SLOW") != "1", reason="full dataset training: set LUODI_SLOW=1"
)
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def app_from_example(tmp_path: Path, example: str, name: str, data_path: Path, **model_opts) -> Path:
    cfg = yaml.safe_load((EXAMPLES / example).read_text())
    cfg["name"] = name
    cfg["data"]["path"] = str(data_path)
    cfg["model"] = {"type": "lightgbm", "options": {"n_estimators": 80, "num_leaves": 15, **model_opts}}
    cfg["train"]["epochs"] = 2
    cfg["train"].pop("refit", None)  # a plain LightGBM early-stops on the validation rows: no refit
    cfg["evaluate"].pop("goal", None)
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_german_credit_original_format(datasets_dir, tmp_path):
    p = app_from_example(
        tmp_path, "credit-risk.yaml", "t-credit", datasets_dir / "german-credit" / "german.data"
    )
    run = api.train(p, progress=False)
    assert run.metrics["roc_auc"] > 0.7  # 800 applicants; the full example reaches ~0.79 in 5-fold CV
    out = api.predict(
        "t-credit",
        [
            {
                "checking_status": "A14",
                "duration": 12,
                "credit_history": "A34",
                "purpose": "A43",
                "credit_amount": 1500,
                "savings": "A65",
                "employment": "A75",
                "installment_rate": 2,
                "personal_status_sex": "A93",
                "other_debtors": "A101",
                "residence_since": 4,
                "property": "A121",
                "age": 45,
                "other_installment_plans": "A143",
                "housing": "A152",
                "existing_credits": 1,
                "job": "A173",
                "people_liable": 1,
                "telephone": "A192",
                "foreign_worker": "A201",
            }
        ],
    )
    probs = out[0]["probabilities"]
    assert set(probs) == {"good", "bad"} and sum(probs.values()) == pytest.approx(1.0)
    assert out[0]["label"] == max(probs, key=probs.get) and out[0]["probability"] == probs[out[0]["label"]]


def test_adult_slice_and_adult_test_format(datasets_dir, tmp_path):
    lines = (datasets_dir / "adult" / "adult.data").read_text().splitlines()
    train = tmp_path / "adult.data"
    train.write_text("\n".join(lines[:4000]) + "\n")
    # the official adult.test layout: a first line "|1x3 Cross validator" and labels ending with '.'
    test = tmp_path / "adult.test"
    test.write_text("|1x3 Cross validator\n" + "\n".join(ln + "." for ln in lines[30000:31500] if ln) + "\n")
    p = app_from_example(tmp_path, "income.yaml", "t-income", train)
    run = api.train(p, progress=False)
    assert run.metrics["accuracy"] > 0.8
    res = api.evaluate(p, data=str(test))
    assert res["metrics"]["n"] == 1500
    assert res["metrics"]["accuracy"] > 0.8 and res["metrics"]["roc_auc"] > 0.85


def test_unknown_category_and_missing_values_predict(datasets_dir, tmp_path):
    p = app_from_example(
        tmp_path, "income.yaml", "t-income2", datasets_dir / "adult" / "adult.data", n_estimators=20
    )
    api.train(p, progress=False)
    rec = {
        "age": 40,
        "workclass": "Space-agency",
        "fnlwgt": 100000,
        "education-num": 13,
        "marital-status": None,
        "occupation": "Exec-managerial",
        "relationship": "Husband",
        "race": "White",
        "sex": "Male",
        "capital-gain": 0,
        "capital-loss": 0,
        "hours-per-week": 50,
        "native-country": None,
    }
    rich = {**rec, "capital-gain": 99999}  # in adult.data every such row earns >50K
    poor = {**rec, "age": 19, "education-num": 7, "occupation": "Handlers-cleaners", "relationship": "Own-child",
            "hours-per-week": 15}
    assert [r["label"] for r in api.predict("t-income2", [rich, poor])] == [">50K", "<=50K"]
    with pytest.raises(BadRequest, match=r"column 'age' must be numeric \(got 'forty'\)") as bad:
        api.predict("t-income2", {**rec, "age": "forty"})
    assert bad.value.param == "age"


def test_regression_and_multiclass(tmp_path):
    reg = {
        "name": "t-reg",
        "task": "tabular",
        "data": {"format": "sklearn:diabetes", "columns": {"label": "target"}, "split": {"valid": 0.25}},
        "model": {"type": "lightgbm", "options": {"n_estimators": 100, "num_leaves": 7}},
        "train": {"lr": 0.05},
    }
    run = api.train(reg, progress=False)
    assert run.metrics["r2"] > 0.25 and run.metrics["rmse"] < 65
    example = api.load_predictor("t-reg").task.prep.example
    assert isinstance(api.predict("t-reg", example)[0]["value"], float)
    multi = {
        "name": "t-iris",
        "task": "tabular",
        "data": {
            "format": "sklearn:iris",
            "columns": {"label": "target"},
            "split": {"valid": 0.3, "seed": 0},
        },
        "model": {"type": "mlp", "options": {"hidden": [16]}},
        "train": {"epochs": 60, "lr": 0.01, "batch_size": 16, "early_stopping": None},
    }
    run = api.train(multi, progress=False)
    assert run.metrics["accuracy"] > 0.85
    out = api.predict("t-iris", [api.load_predictor("t-iris").task.prep.example])
    assert set(out[0]["probabilities"]) == {"setosa", "versicolor", "virginica"}


def test_forest_and_svm_members_stored_as_onnx(tmp_path):
    """Random forest + RBF SVM (binary, regression, multiclass): ONNX files match scikit-learn, reload the same;
    svm_max_rows caps the rows the SVM fits."""
    import onnx

    from luodi.options import TabularOptions
    from luodi.tasks.tabular.sklearn_members import sklearn_estimator

    app = {
        "name": "t-sk",
        "task": "tabular",
        "data": {"format": "sklearn:breast_cancer", "columns": {"label": "target"}, "split": {"valid": 0.25}},
        "model": {
            "type": "ensemble",
            "options": {"ensemble_weights": {"forest": 1, "svm": 1}, "forest_trees": 60, "calibration": "none"},
        },
    }
    run = api.train(app, progress=False)
    assert run.metrics["roc_auc"] > 0.97
    assert (run.path / "forest.onnx").exists() and (run.path / "svm.onnx").exists()
    assert not list(run.path.rglob("*.pkl")) and not list(run.path.rglob("*.joblib"))
    task = api.load_predictor("t-sk").task
    train, valid = task.split(task.read(None))
    x_tr, x_va = task.prep.dense_matrix(train), task.prep.dense_matrix(valid)
    y_tr = task._target(train)
    opts = TabularOptions(forest_trees=60)
    # an integer fraction means a fraction (1: every feature), not scikit-learn's "one feature"
    mf = sklearn_estimator("forest", False, TabularOptions(forest_max_features=1), seed=0).max_features
    assert isinstance(mf, float) and mf == 1.0
    for kind in ("forest", "svm"):  # the stored ONNX member predicts what scikit-learn predicts
        ref = sklearn_estimator(kind, False, opts, seed=0).fit(x_tr, y_tr).predict_proba(x_va)
        np.testing.assert_allclose(task.sk[kind].predict(x_va, regression=False), ref, atol=1e-4)
    np.testing.assert_allclose(task.predict_proba(valid), (task.sk["forest"].predict(x_va, False) + ref) / 2, atol=1e-6)

    capped = {**app, "name": "t-sk-cap", "model": {"type": "svm", "options": {"svm_max_rows": 120}}}
    run = api.train(capped, progress=False)  # the SVM fits a stratified sample of 120 of the 426 rows
    assert run.metrics["roc_auc"] > 0.95
    svm = onnx.load_from_string(api.load_predictor("t-sk-cap").task.sk["svm"].blob)
    counts = next(a.ints for n in svm.graph.node if n.op_type == "SVMClassifier" for a in n.attribute
                  if a.name == "vectors_per_class")
    assert 0 < sum(counts) <= 120

    reg = {**app, "name": "t-sk-reg", "data": {**app["data"], "format": "sklearn:diabetes"}}
    run = api.train(reg, progress=False)
    assert run.metrics["r2"] > 0.3
    multi = {
        **app,
        "name": "t-sk-iris",
        "data": {**app["data"], "format": "sklearn:iris"},
        "model": {"type": "svm"},
    }
    run = api.train(multi, progress=False)
    assert run.metrics["accuracy"] > 0.85 and not (run.path / "forest.onnx").exists()
    out = api.predict("t-sk-iris", [api.load_predictor("t-sk-iris").task.prep.example])[0]
    assert sum(out["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    for bad, key in (
        ({"ensemble_weights": {"forest": 1, "boosting": 1}}, "ensemble_weights"),
        ({"ensemble_weights": {"forest": -1}}, "ensemble_weights"),
        ({"svm_gamma": -1.0}, "svm_gamma"),
        ({"forest_max_features": "most"}, "forest_max_features"),
        ({"svm_max_rows": 10}, "svm_max_rows"),
    ):
        cfg = {**app, "name": "t-sk-bad", "model": {"type": "ensemble", "options": {"svm_C": 1.0, **bad}}}
        if "ensemble_weights" not in bad:
            cfg["model"]["options"]["ensemble_weights"] = {"forest": 1, "svm": 1}
        with pytest.raises(ConfigError, match=f"model.options.{key}"):
            api.train(cfg, progress=False)


def test_linear_model_with_ordinal_columns(datasets_dir, tmp_path):
    """Linear + 2-seed LightGBM ensemble, ordered categories as ranks: trains, saves, loads, predicts."""
    order = {"checking_status": ["A11", "A12", "A13", "A14"], "savings": ["A61", "A62", "A63", "A64", "A65"]}
    p = app_from_example(
        tmp_path, "credit-risk.yaml", "t-credit-lin", datasets_dir / "german-credit" / "german.data"
    )
    cfg = yaml.safe_load(p.read_text())
    cfg["model"] = {
        "type": "ensemble",
        "options": {
            "n_estimators": 60,
            "num_leaves": 4,
            "seeds": 2,
            "ensemble_weights": [1, 0, 1],
            "ordinal": order,
        },
    }
    run = api.train(cfg, progress=False)
    assert run.metrics["roc_auc"] > 0.72
    pred = api.load_predictor("t-credit-lin")
    task = pred.task
    assert task.weights["lightgbm"] == task.weights["linear"] == 0.5 and "checking_status" in task.prep.numeric
    assert (run.path / "model.lgb.1.txt").exists() and len(task.more_boosters) == 1
    one = task.more_boosters[0].predict(task.prep.lgb_matrix(task.encode_ordinal(task.read(None).head(50))))
    two = task.booster.predict(task.prep.lgb_matrix(task.encode_ordinal(task.read(None).head(50))))
    assert not np.allclose(one, two)  # the seeds differ
    # the linear model learned that more money in the checking account means a good risk
    # (binary coefficients are those of classes[1], here "good")
    col = task.prep.numeric.index("checking_status")
    assert task.classes[1] == "good" and task.linear["coef"][0][col] > 0
    example = task.input_model().model_config["json_schema_extra"]["examples"][0]
    assert example["checking_status"] in order["checking_status"]
    lo = api.predict("t-credit-lin", {**example, "checking_status": "A11"})[0]["probabilities"]["bad"]
    hi = api.predict("t-credit-lin", {**example, "checking_status": "A14"})[0]["probabilities"]["bad"]
    assert lo > hi
    bad = {"ordinal": {"savings": "A61"}}
    with pytest.raises(ConfigError, match=r"model\.options\.ordinal\.savings': Input should be a valid list"):
        api.train({**cfg, "name": "t-bad", "model": {"type": "ensemble", "options": bad}}, progress=False)


def test_coding_recodes_columns_for_its_members():
    """model.options.coding: ranks and a few indicators; unknown / missing values -> NaN; bad configs named."""
    import pandas as pd

    from luodi.data.coding import Coding
    from luodi.errors import ConfigError

    c = Coding.from_options(
        {"ordinal": {"size": ["S", "M", "L"]}, "indicators": {"color": ["red", "blue"]}}, {"grade": ["a", "b"]}
    )
    assert c.members == ["linear"]  # the default
    df = pd.DataFrame({"size": ["M", "XL", None], "color": ["blue", "green", None], "n": [1, 2, 3]})
    out = c.recode(df)
    assert list(out.columns) == ["size", "n", "color=red", "color=blue"]
    assert out["size"].tolist()[:1] == [1.0] and out["size"].isna().tolist() == [False, True, True]
    assert out["color=blue"].tolist()[:2] == [1.0, 0.0] and out["color=red"].tolist()[:2] == [0.0, 0.0]
    assert np.isnan(out["color=red"].iloc[2])
    assert c.features(["size", "color", "n"]) == ["size", "color=red", "color=blue", "n"]
    for bad, key in (
        ({"members": ["lightgbm"], "ordinal": {"size": ["S", "M"]}}, "coding.members"),
        ({"ordinal": {"size": "S"}}, "coding.ordinal"),
        ({"indicators": {"color": []}}, "coding.indicators"),
        ({"ordinal": {"grade": ["a", "b"]}}, "coded twice"),
        ({"members": ["linear"]}, "needs ordinal or indicators"),
        ({"ordinal": {"size": ["S", "M"]}, "onehot": {}}, "keys members, ordinal, indicators"),
    ):
        with pytest.raises(ConfigError, match=key):
            Coding.from_options(bad, {"grade": ["a", "b"]})


def test_compact_coding_for_linear_and_svm_members(datasets_dir, tmp_path):
    """The linear and SVM members read their own compact coding; LightGBM keeps the shared one; save / load."""
    p = app_from_example(
        tmp_path, "credit-risk.yaml", "t-credit-coded", datasets_dir / "german-credit" / "german.data"
    )
    cfg = yaml.safe_load(p.read_text())
    coding = {
        "members": ["linear", "svm"],
        "ordinal": {"credit_history": ["A30", "A31", "A32", "A33", "A34"]},
        "indicators": {"purpose": ["A40", "A41"], "job": ["A171", "A172", "A173"]},
    }
    opts = {"n_estimators": 60, "num_leaves": 4, "linear_C": 0.1, "coding": coding}
    cfg["model"] = {"type": "ensemble", "options": {**opts, "ensemble_weights": {"lightgbm": 1, "linear": 1, "svm": 1}}}
    run = api.train(cfg, progress=False)
    assert run.metrics["roc_auc"] > 0.72
    task = api.load_predictor("t-credit-coded").task
    shared, coded = task.prep, task.coded_prep
    assert "purpose" in shared.categorical and "credit_history" in shared.categorical
    assert {"credit_history", "purpose=A40", "purpose=A41", "job=A173"} <= set(coded.numeric)
    assert "purpose" not in coded.features and "housing" in coded.categorical
    rows = task.read(None).head(40)
    assert len(task.linear["coef"][0]) == task._dense(rows, "linear").shape[1] < shared.dense_matrix(rows).shape[1]
    first = api.predict("t-credit-coded", rows.drop(columns="risk").head(3).to_dict("records"))
    assert [r["label"] for r in first] and abs(sum(first[0]["probabilities"].values()) - 1) < 1e-6
    # an unseen purpose is the indicators' baseline, not an error
    odd = {**rows.drop(columns="risk").iloc[0].to_dict(), "purpose": "A999"}
    assert api.predict("t-credit-coded", odd)[0]["label"] in ("good", "bad")
    cfg["model"]["options"]["coding"] = {"ordinal": {"no_such_column": ["a", "b"]}}
    with pytest.raises(ConfigError, match="model.options.coding': column 'no_such_column' is not a feature"):
        api.train({**cfg, "name": "t-bad-coding"}, progress=False)


def test_inner_folds_cross_fit_resume_and_unseen_validation(datasets_dir, tmp_path):
    """inner_folds: k members, validation split only scored, interrupted member resumes, save/load."""
    from luodi.apps import registry
    from luodi.tasks import task_for

    p = app_from_example(
        tmp_path, "credit-risk.yaml", "t-credit-cf", datasets_dir / "german-credit" / "german.data"
    )
    cfg = yaml.safe_load(p.read_text())
    opts = {"n_estimators": 60, "num_leaves": 4, "inner_folds": 3, "ensemble_weights": [1, 0, 1]}
    cfg["model"] = {"type": "ensemble", "options": {**opts, "linear_C": 0.1}}
    seen: list[dict] = []

    def stop_in_member_1(epoch, logs):
        seen.append(logs)
        if logs.get("member") == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        api.train(cfg, progress=False, callbacks=[stop_in_member_1])
    assert {s["member"] for s in seen} == {0, 1}
    seen.clear()
    run = api.train(cfg, progress=False, resume=True, callbacks=[lambda e, logs: seen.append(logs)])
    assert run.status == "done" and seen and all(s["member"] >= 1 for s in seen)  # member 0 was kept
    assert run.metrics["roc_auc"] > 0.72
    assert all((run.path / f"member{j}" / "model.lgb.txt").exists() for j in range(3))
    assert not (run.path / registry.CHECKPOINT_DIR).exists()
    task = api.load_predictor("t-credit-cf").task
    assert len(task.members) == 3 and task.calibrator is not None
    example = task.input_model().model_config["json_schema_extra"]["examples"][0]
    out = api.predict("t-credit-cf", example)[0]
    assert out["probabilities"]["bad"] + out["probabilities"]["good"] == pytest.approx(1.0)

    # the validation split is only scored: another validation frame gives the same model
    fresh = task_for(api.load_app(cfg))
    train, valid = fresh.split(fresh.read(None))
    probas = []
    for i, va in enumerate((valid, valid.iloc[:40])):
        t = task_for(api.load_app(cfg))
        t.fit(train, va, tmp_path / f"fit{i}", progress=False)
        probas.append(t.predict_proba(valid))
    np.testing.assert_allclose(probas[0], probas[1])
    bad = {**cfg, "name": "t-bad-folds", "model": {"type": "lightgbm", "options": {"inner_folds": 1}}}
    with pytest.raises(ConfigError, match=r"model\.options\.inner_folds': must be 0 \(off\) or an integer >= 2"):
        api.train(bad, progress=False)


def test_balancing_helpers():
    y = np.array([0] * 90 + [1] * 10)
    w = class_weights(y)
    assert w[1] == pytest.approx(5.0) and w[0] == pytest.approx(100 / 180)
    over = resample(y, "oversample", seed=0)
    assert (y[over] == 1).sum() == 90 and len(over) == 180
    under = resample(y, "undersample", seed=0)
    assert (y[under] == 0).sum() == 10 and len(under) == 20


@SLOW
@pytest.mark.parametrize(
    "example,metric,target",
    [
        ("diagnosis.yaml", "roc_auc", 0.99),
        ("credit-risk.yaml", "roc_auc", 0.72),  # 160-row split, never fitted on: 0.725; 5-fold CV 0.796
        ("income.yaml", "accuracy", 0.87),
    ],
)
def test_full_examples_reach_their_goals(datasets_dir, example, metric, target):
    run = api.train(EXAMPLES / example, progress=False)
    assert run.metrics[metric] >= target


def test_predict_input_files_in_the_data_format(tmp_path):
    """`luodi predict --input` reads headerless lines like the training file (with or without the label field,
    wherever it sits), a CSV with a header, JSON; a wrong field count is a 400 naming the expected counts."""
    from sklearn.datasets import load_iris

    from luodi.errors import BadRequest

    iris = load_iris()
    names = ["sepal_l", "sepal_w", "species", "petal_l", "petal_w"]  # the label in the middle
    lines = [
        f"{a} {b} {iris.target_names[t]} {c} {d}" for (a, b, c, d), t in zip(iris.data, iris.target, strict=True)
    ]
    data = tmp_path / "iris.data"
    data.write_text("# iris, whitespace-separated, no header\n" + "\n".join(lines) + "\n")
    app = {
        "name": "t-iris-ws",
        "task": "tabular",
        "data": {
            "path": str(data),
            "format": "whitespace",
            "options": {"comment": "#"},
            "columns": {"names": names, "label": "species"},
            "split": {"valid": 0.3, "seed": 0},
        },
        "model": {"type": "lightgbm", "options": {"n_estimators": 60, "num_leaves": 7, "min_child_samples": 5}},
    }
    api.train(app, progress=False)
    rows = [0, 60, 120]  # one of each class
    with_label = tmp_path / "three.data"
    with_label.write_text("\n".join(lines[i] for i in rows) + "\n")
    expected = [iris.target_names[iris.target[i]] for i in rows]
    assert [r["label"] for r in api.predict("t-iris-ws", with_label)] == expected
    no_label = tmp_path / "three-unlabelled.data"
    no_label.write_text("\n".join(" ".join(np.delete(lines[i].split(), 2)) for i in rows) + "\n")
    assert [r["label"] for r in api.predict("t-iris-ws", no_label)] == expected
    csv = tmp_path / "three.csv"
    csv.write_text("petal_w,petal_l,sepal_w,sepal_l\n" + "".join(
        f"{iris.data[i][3]},{iris.data[i][2]},{iris.data[i][1]},{iris.data[i][0]}\n" for i in rows
    ))
    assert [r["label"] for r in api.predict("t-iris-ws", csv)] == expected
    js = tmp_path / "three.json"
    js.write_text(json.dumps([dict(zip(["sepal_l", "sepal_w", "petal_l", "petal_w"], iris.data[i].tolist(),
                                       strict=True)) for i in rows]))
    assert [r["label"] for r in api.predict("t-iris-ws", js)] == expected
    assert api.evaluate("t-iris-ws", data=with_label, report=False)["metrics"]["accuracy"] == 1.0
    with pytest.raises(BadRequest, match="no label column 'species'"):  # not misaligned columns
        api.evaluate("t-iris-ws", data=no_label, report=False)
    short = tmp_path / "short.data"
    short.write_text("5.1 3.5 1.4\n")
    with pytest.raises(BadRequest, match=r"3 fields per line; expected 5 \(or 4 without the label 'species'\)"):
        api.predict("t-iris-ws", short)
    with pytest.raises(BadRequest, match="'data': .* 3 fields per line"):
        api.evaluate("t-iris-ws", data=short, report=False)
