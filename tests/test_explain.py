"""Explanations: exact TreeSHAP for LightGBM members, ablation for the rest, the explain route, integrated
gradients (completeness) for torch models and text apps, and the audit's explanations section."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from luodi import api
from luodi.audit import explanations
from luodi.errors import BadRequest
from luodi.evaluate.attributions import integrated_gradients, lgb_shap


def frame(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """A table whose label depends on two numbers and a category; `noise` carries nothing."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "income": rng.normal(size=n),
            "debt": rng.normal(size=n),
            "noise": rng.normal(size=n),
            "region": rng.choice(["north", "south", "east"], n),
        }
    )
    z = df.income - df.debt + np.where(df.region == "north", 1.0, 0.0) + rng.normal(scale=0.3, size=n)
    df["y"] = np.where(z > 0.3, "good", "bad")
    return df


def app(tmp_path, name: str, model: dict) -> dict:
    path = tmp_path / f"{name}.csv"
    frame().to_csv(path, index=False)
    return {
        "name": name,
        "task": "tabular",
        "data": {"path": str(path), "columns": {"label": "y", "positive": "good"}, "split": {"valid": 0.3, "seed": 0}},
        "model": model,
        "train": {"epochs": 2, "lr": 0.1, "seed": 0},
    }


@pytest.fixture(scope="module")
def lgb_app(tmp_path_factory) -> dict:
    cfg = app(
        tmp_path_factory.mktemp("explain"),
        "x-lgb",
        {"type": "lightgbm", "options": {"n_estimators": 40, "min_child_samples": 5}},
    )
    api.train(cfg, progress=False)
    return cfg


def rows(n: int = 5) -> list[dict]:
    return frame(n, seed=1).drop(columns="y").to_dict(orient="records")


def test_tree_shap_adds_up_to_the_boosters_margin_and_matches_shap(lgb_app):
    """Additivity: SHAP values + base = the booster's raw score; the same numbers as shap's TreeExplainer."""
    import shap

    task = api.load_predictor(lgb_app["name"]).task
    x = task.prep.lgb_matrix(task.encode_ordinal(pd.DataFrame(rows(20))))
    phi, base = lgb_shap(task.booster, x, len(task.classes))
    margin = task.booster.predict(x, raw_score=True)
    assert phi.shape == (20, 1, len(task.prep.features))
    np.testing.assert_allclose(phi.sum(-1)[:, 0] + base[:, 0], margin, atol=1e-9)
    ref = np.asarray(shap.TreeExplainer(task.booster).shap_values(x))
    np.testing.assert_allclose(phi[:, 0], ref.reshape(phi[:, 0].shape), atol=1e-6)
    for i in range(3):  # one record: LightGBM's single-row fast path, the same numbers
        one, one_base = lgb_shap(task.booster, x[i : i + 1], len(task.classes))
        assert np.array_equal(one[0], phi[i]) and np.array_equal(one_base[0], base[i])


def test_explanation_adds_up_to_the_served_probability(lgb_app):
    """explain: effects on the predicted label's probability; base + effects = the served probability; the
    feature the label ignores has (almost) no effect, the one it leans on most is on top."""
    outs = api.predict(lgb_app["name"], rows(), explain=True)
    plain = api.predict(lgb_app["name"], rows())
    for out, p in zip(outs, plain, strict=True):
        ex = out["explanation"]
        assert {k: v for k, v in out.items() if k != "explanation"} == p  # predict's answer, from the same pass
        assert ex["method"] == "shap" and ex["target"] == f"probability of '{out['label']}'"
        assert ex["base"] + sum(e["effect"] for e in ex["effects"]) == pytest.approx(out["probability"], abs=1e-5)
        sizes = [abs(e["effect"]) for e in ex["effects"]]
        assert sizes == sorted(sizes, reverse=True)
    importance = explanations.table_numbers(api.load_predictor(lgb_app["name"]).task, frame(200, seed=2))["importance"]
    order = [r["feature"] for r in importance]
    assert order.index("noise") > order.index("income") and order.index("noise") > order.index("debt")


def test_ensemble_combines_shap_with_ablation_and_other_models_keep_ablation(tmp_path):
    ens = app(
        tmp_path,
        "x-ens",
        {"type": "ensemble", "options": {"ensemble_weights": {"lightgbm": 1, "linear": 1}, "n_estimators": 30}},
    )
    api.train(ens, progress=False)
    out = api.predict("x-ens", rows(2), explain=True)
    for o, p in zip(out, api.predict("x-ens", rows(2)), strict=True):
        ex = o["explanation"]
        assert ex["method"] == "shap+ablation" and o["label"] == p["label"]
        assert o["probabilities"] == pytest.approx(p["probabilities"], abs=1e-12)  # same model, one pass
        assert ex["base"] + sum(e["effect"] for e in ex["effects"]) == pytest.approx(o["probability"], abs=1e-5)
    lin = app(tmp_path, "x-lin", {"type": "linear"})
    api.train(lin, progress=False)
    ex = api.predict("x-lin", rows(1), explain=True)[0]["explanation"]
    assert "method" not in ex and {"feature", "value", "typical", "effect"} <= set(ex["effects"][0])  # ablation
    # ablation, by definition: an effect is the change in the predicted label's probability when that feature
    # alone takes its typical value, and a typical record has no effects
    rec = rows(1)[0]
    out = api.predict("x-lin", rec, explain=True)[0]
    top = out["explanation"]["effects"][0]
    moved = api.predict("x-lin", {**rec, top["feature"]: top["typical"]})[0]["probabilities"][out["label"]]
    assert out["probability"] - moved == pytest.approx(top["effect"], abs=1e-6)
    typical = {e["feature"]: e["typical"] for e in out["explanation"]["effects"]}
    assert api.predict("x-lin", {**rec, **typical}, explain=True)[0]["explanation"]["effects"] == []


def test_explain_route_answers_with_effects_and_names_bad_fields(lgb_app):
    from luodi.serve.app import create_app
    from luodi.settings import get_settings

    settings = get_settings().model_copy(update={"auth": "off"})
    with TestClient(create_app(settings, preload=False)) as c:
        rec = rows(2)
        r = c.post(f"/v1/apps/{lgb_app['name']}/explain", json=rec[0])
        assert r.status_code == 200, r.text
        effects = r.json()["explanation"]["effects"]
        assert {e["feature"] for e in effects} <= {"income", "debt", "noise", "region"} and effects
        r = c.post(f"/v1/apps/{lgb_app['name']}/explain", json={"inputs": rec})
        assert len(r.json()["outputs"]) == 2 and all("explanation" in o for o in r.json()["outputs"])
        bad = {k: v for k, v in rec[0].items() if k != "debt"}
        r = c.post(f"/v1/apps/{lgb_app['name']}/explain", json=bad)
        assert 400 <= r.status_code < 500 and "debt" in r.text
        r = c.post(f"/v1/apps/{lgb_app['name']}/explain", json={**rec[0], "income": "lots"})
        assert 400 <= r.status_code < 500 and "income" in r.text
        assert c.post("/v1/apps/no-such-app/explain", json=rec[0]).status_code == 404


def test_integrated_gradients_completeness_on_a_tiny_torch_model():
    """Sum of attributions = f(x) - f(baseline) within 1 % of the logit (32 Gauss-Legendre steps)."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    x = torch.randn(8, 6)
    target = model(x).argmax(1)
    attr, err = integrated_gradients(model, x, torch.zeros_like(x), target, steps=32)
    with torch.no_grad():
        gap = model(x).gather(1, target[:, None])[:, 0] - model(torch.zeros_like(x)).gather(1, target[:, None])[:, 0]
    np.testing.assert_allclose(attr.sum(1).detach().numpy(), gap.numpy(), rtol=0.01, atol=1e-4)
    assert attr.shape == x.shape and (err <= 0.01).all()


def test_image_attributions_are_pixel_maps_that_add_up():
    import torch

    from luodi.evaluate.attributions import image_attributions

    torch.manual_seed(0)
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.Softplus(), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 3)
    )
    images = torch.rand(2, 1, 8, 8)
    attr, err = image_attributions(cnn, images, target=torch.tensor([0, 2]))
    assert attr.shape == (2, 1, 8, 8) and (err <= 0.01).all()


def test_text_app_explains_words_with_integrated_gradients(datasets_dir, tmp_path):
    from luodi.config import validate_app
    from luodi.tasks import task_for

    raw = {
        "name": "t",
        "task": "text-classification",
        "data": {"path": str(datasets_dir / "banking77/train.csv"), "columns": {"label": "category"}},
        "model": {"options": {"features": ["embeddings", "tfidf"]}},
    }
    task = task_for(validate_app(raw))
    df = task.read(None)
    keep = sorted(df.label.unique())[:4]
    df = df[df.label.isin(keep)].groupby("label").head(25).reset_index(drop=True)
    task.fit(df, df, tmp_path / "run", progress=False)
    texts = [{"text": t} for t in df.text[:4]]
    outs = task.explain(texts, top=3)
    for t, o in zip(texts, outs, strict=True):
        ex = o["explanation"]
        assert ex["method"] == "integrated-gradients" and ex["completeness_error"] <= 0.01
        assert "TF-IDF head is not differentiable" in ex["target"] and len(ex["effects"]) <= 3
        assert all(e["token"].lower() in t["text"].lower() for e in ex["effects"])
    tfidf_only = task_for(validate_app({**raw, "model": {"options": {"features": ["tfidf"]}}}))
    tfidf_only.fit(df, df, tmp_path / "tfidf", progress=False)
    with pytest.raises(BadRequest, match="not differentiable"):
        tfidf_only.explain(texts)


def test_audit_section_is_skipped_where_it_does_not_apply():
    pred = SimpleNamespace(task=SimpleNamespace(name="text-generation"))
    s = explanations.section(pred, None, None)
    assert s.status == "skipped" and "text-generation" in s.note


def test_audit_section_of_a_table_app_has_importance_and_a_plot(lgb_app):
    pred = api.load_predictor(lgb_app["name"])
    s = explanations.section(pred, None, frame(100, seed=3), explain_rows=50)
    assert s.status == "ok" and s.numbers["method"] == "shap" and s.numbers["rows"] == 50
    assert "<img" in s.html and len(s.numbers["examples"]) == 3


def test_audit_section_of_an_image_app_has_heat_maps(tmp_path):
    from luodi.config import AppConfig
    from luodi.tasks import task_for

    cfg = {
        "name": "x-digits",
        "task": "image-classification",
        "data": {"format": "sklearn:digits", "split": {"valid": 0.25, "seed": 0}},
        "model": {"type": "cnn", "options": {"width": 4}},
        "train": {"epochs": 1, "batch_size": 32},
    }
    task = task_for(AppConfig.model_validate(cfg))
    train, valid = task.split(task.read(None))
    task.fit(train.subset(range(200)), valid, tmp_path, progress=False)
    s = explanations.section(SimpleNamespace(task=task), train, valid)
    assert s.status == "ok" and s.numbers["images"] == 4 and len(s.numbers["completeness_error"]) == 4
    assert "<img" in s.html and s.numbers["predicted"][0] in [str(c) for c in task.need().meta["classes"]]


def test_fine_tuned_encoder_head_is_explained_through_its_embeddings():
    """The fine-tuned head's path (encoder from its word embeddings, pooling, cosine classifier) is
    differentiable: integrated gradients over its tokens add up to its logit change (an untrained head here)."""
    import torch

    from luodi.tasks.text_finetune import CosineClassifier
    from luodi.tasks.token_attributions import _finetune_part, attribute_text

    torch.manual_seed(0)
    member = CosineClassifier("bundled:minilm-l6", n_classes=3).eval()
    a = attribute_text([_finetune_part(member, 1.0)], "my card has not arrived yet", target=1, max_length=32)
    assert [w for w, _ in a["words"]] == ["my", "card", "has", "not", "arrived", "yet"]
    assert a["completeness_error"] <= 0.01


@pytest.fixture(scope="module")
def full_ensemble(tmp_path_factory) -> dict:
    """All five members, two cross-fitted copies, an ordered column (shared ranks) and a compact coding for the
    MLP and the linear model: every way the direct coder (luodi/tasks/tabular/rows.py) builds a matrix."""
    df = frame(240)
    rng = np.random.default_rng(3)
    df["grade"] = rng.choice(["low", "mid", "high"], len(df))
    df["kind"] = rng.choice(["a", "b", "c", "d"], len(df))
    df["size"] = rng.choice(["s", "m", "l"], len(df))
    df.loc[::17, "debt"] = np.nan
    path = tmp_path_factory.mktemp("full") / "x-full.csv"
    df.to_csv(path, index=False)
    options = {
        "ensemble_weights": {"lightgbm": 1, "mlp": 1, "linear": 1, "forest": 1, "svm": 1},
        "inner_folds": 2,
        "n_estimators": 20,
        "forest_trees": 15,
        "hidden": [8],
        "calibration": "sigmoid",
        "ordinal": {"grade": ["low", "mid", "high"]},
        "coding": {"members": ["mlp", "linear"], "ordinal": {"size": ["s", "m", "l"]}, "indicators": {"kind": ["a"]}},
    }
    cfg = {
        "name": "x-full",
        "task": "tabular",
        "data": {"path": str(path), "columns": {"label": "y", "positive": "good"}, "split": {"valid": 0.3, "seed": 0}},
        "model": {"type": "ensemble", "options": options},
        "train": {"epochs": 2, "lr": 0.1, "seed": 0},
    }
    api.train(cfg, progress=False)
    return cfg


def odd_rows() -> list[dict]:
    """Validation-like records plus the awkward ones: missing values, unknown categories and ranks, padding."""
    out = rows(6)
    rng = np.random.default_rng(4)
    for r in out:
        r.update(grade=str(rng.choice(["low", "mid", "high"])), kind=str(rng.choice(["a", "b", "d"])), size="m")
    out[1].update(debt=None, region=None, grade=None, kind=None, size=None)
    out[2].update(region="west", grade="top", kind="zz", size="xl")
    out[3].update(region=" north ", grade=" high", kind="a ", income=3)
    return out


def test_single_records_skip_pandas_with_the_same_matrices_and_answers(full_ensemble):
    """The direct coder builds each cross-fitted member's matrices bit for bit as the pandas path does; the
    answers equal the ensemble computed the way predict did before (torch MLP, pandas per member) to float
    rounding; a value only pandas converts (a number sent as a string) takes the pandas path, same answer."""
    import torch

    from luodi.tasks.tabular.rows import ArrayRows, PandasRows

    task = api.load_predictor(full_ensemble["name"]).task
    recs = odd_rows()
    fast, slow = task._rows(recs), PandasRows(task, task._frame(recs))
    assert isinstance(fast, ArrayRows) and len(task.members) == 2
    for j in range(len(task.members)):
        for key in ("lgb", "dense", "coded"):
            a, b = fast.matrices(j)(key), slow.matrices(j)(key)
            assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True), (j, key)

    def before(m, df):  # the ensemble as _raw_proba computed it before the direct coder
        sh = m.encode_ordinal(df)
        w = m.weights
        with torch.inference_mode():
            mlp = torch.softmax(m.mlp(torch.from_numpy(m._dense(sh, "mlp"))), 1).numpy().astype(np.float64)
        parts = [w["lightgbm"] * m._lgb_proba(m.prep.lgb_matrix(sh)), w["mlp"] * mlp]
        parts.append(w["linear"] * m._linear_out(m._dense(sh, "linear")))
        parts += [w[k] * s.predict(m._dense(sh, k), False) for k, s in m.sk.items()]
        return np.sum(parts, axis=0)

    ref = task._calibrate(np.mean([before(m, task._frame(recs)) for m in task.members], axis=0))
    got = np.array([[o["probabilities"][c] for c in task.classes] for o in task.predict(recs)])
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)
    stringly = dict(recs[0], income=str(recs[0]["income"]))
    assert isinstance(task._rows([stringly]), PandasRows)
    assert task.predict([stringly])[0]["probabilities"] == pytest.approx(task.predict(recs[:1])[0]["probabilities"])


def test_ensemble_explanation_is_the_same_through_either_coder_and_adds_up(full_ensemble):
    """explain with the direct coder = explain through pandas (the coder forced off); ablation is only run
    where a feature differs from typical; base + effects = the served probability = predict's."""
    from luodi.evaluate.explain import ablation_deltas, typical_record

    task = api.load_predictor(full_ensemble["name"]).task
    recs = odd_rows()
    fast = task.explain(recs)
    task._coder = False  # the pandas path
    slow = task.explain(recs)
    rest = ("mlp", "linear", "forest", "svm")
    deltas = ablation_deltas(
        lambda r: task._raw_proba(task._frame(r), only=rest), recs, typical_record(task.prep, task.ordinal)
    )
    task._coder = None
    for a, b, p in zip(fast, slow, task.predict(recs), strict=True):
        assert a["label"] == b["label"] == p["label"]
        assert a["probabilities"] == pytest.approx(p["probabilities"], abs=1e-12)
        assert a["explanation"]["method"] == "shap+ablation"
        assert a["explanation"]["base"] == pytest.approx(b["explanation"]["base"], abs=1e-9)
        effects = {e["feature"]: e["effect"] for e in b["explanation"]["effects"]}
        assert {e["feature"]: e["effect"] for e in a["explanation"]["effects"]} == pytest.approx(effects, abs=1e-9)
        ex = a["explanation"]
        assert ex["base"] + sum(e["effect"] for e in ex["effects"]) == pytest.approx(a["probability"], abs=1e-5)
    assert deltas.shape == (len(recs), len(task.prep.features), 2)  # the old one-batch ablation still answers


def test_forest_and_svm_ablation_replays_match_onnxruntime():
    """luodi.evaluate.onnx_ablation replays the stored forest / SVM graphs: every record's and every one-feature
    variant's output equals onnxruntime's to float32 rounding (the records' forest sums bit for bit, as
    onnxruntime adds them), for binary and multi-class classifiers and regressors, with two variants changing
    one column (walked in full) too; a graph it does not cover answers None (onnxruntime stays)."""
    from luodi.evaluate.onnx_ablation import ForestAblation, SvmAblation, from_onnx
    from luodi.options.tabular import TabularOptions
    from luodi.tasks.tabular.sklearn_members import OnnxMember, fit_onnx

    rng = np.random.default_rng(0)
    x = np.hstack([rng.normal(size=(300, 4)), np.eye(3)[rng.integers(0, 3, 300)]]).astype(np.float32)
    x[::13, 1] = np.nan  # missing values take onnxruntime's default branch
    typical = np.r_[np.zeros(4), [1.0, 0.0, 0.0]].astype(np.float32)
    recs = x[:6]
    rec, feat = np.repeat(np.arange(6), 5), np.tile(np.arange(5), 6)  # feature 4 = the one-hot columns 4..6
    cols = [[0], [1], [2], [3], [4, 5, 6]]
    variants = recs[rec].copy()
    for i, f in enumerate(feat):
        variants[i, cols[f]] = typical[cols[f]]
    opts = TabularOptions(forest_trees=20, svm_max_rows=300)
    cases = [("forest", 2), ("forest", 3), ("forest", 0), ("svm", 2), ("svm", 0)]
    for kind, classes in cases:
        y = rng.normal(size=300) if classes == 0 else (np.nan_to_num(x[:, 0]) * 2 + x[:, 4] > 0).astype(int)
        if classes == 3:
            y = y + (x[:, 5] > 0.5)
        x_fit = np.nan_to_num(x) if kind == "svm" else x
        member = OnnxMember(fit_onnx(kind, x_fit, y, None, classes == 0, opts, 0))
        replay = from_onnx(member.blob, member.session, classes == 0)
        assert isinstance(replay, ForestAblation if kind == "forest" else SvmAblation), (kind, classes)
        rows_ = np.vstack([recs, variants]) if kind == "forest" else np.nan_to_num(np.vstack([recs, variants]))
        want = member.predict(rows_, classes == 0)
        if kind == "forest":
            ort, own, varied = replay.predict_ablated(rows_[:6], rows_[6:], rec)
            assert np.array_equal(ort, want[:6]) or classes == 0  # bit for bit (classifiers)
            np.testing.assert_allclose(ort, want[:6], rtol=1e-6, atol=1e-6)
            other = rows_[1:3]  # two "variants" of record 0 that change the same columns: each walked in full
            conflict = replay.predict_ablated(rows_[:1], other, np.zeros(2, int))[2]
            np.testing.assert_allclose(conflict, member.predict(other, classes == 0), rtol=1e-5, atol=1e-5)
        else:
            both = replay.predict(rows_)
            own, varied = both[:6], both[6:]
        np.testing.assert_allclose(own, want[:6], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(varied, want[6:], rtol=1e-5, atol=1e-5)
    classifier = OnnxMember(fit_onnx("forest", x, (x[:, 4] > 0).astype(int), None, False, opts, 0))
    assert from_onnx(classifier.blob, classifier.session, True) is None  # read as a regressor: not covered


def test_explain_replay_gives_the_previous_paths_attributions(full_ensemble):
    """The forest / SVM ablation replayed (the default) against the previous path (every ablated row through
    onnxruntime, `fast_ablation = False`): the same effects and bases within 2e-6 (answers round effects to
    6 decimals; onnxruntime sums in float32, the replay's changes in float64), the same labels, and the
    records' probabilities exactly predict's (their forest / SVM outputs are onnxruntime's numbers)."""
    from luodi.evaluate.onnx_ablation import ForestAblation, SvmAblation

    task = api.load_predictor(full_ensemble["name"]).task
    recs = odd_rows() + frame(20, seed=5).drop(columns="y").assign(grade="mid", kind="b", size="l").to_dict("records")
    fast = task.explain(recs)
    kernels = task._ablation_kernels()
    assert kernels is not None and len(kernels) == len(task.members) == 2
    assert all(isinstance(k["forest"], ForestAblation) and isinstance(k["svm"], SvmAblation) for k in kernels)
    task.fast_ablation = False
    try:
        slow = task.explain(recs)
    finally:
        task.fast_ablation = True
    singles = [task.explain([r])[0] for r in recs[:4]]
    for a, b, p in zip(fast, slow, task.predict(recs), strict=True):
        assert a["label"] == b["label"] == p["label"]
        assert a["probabilities"] == pytest.approx(p["probabilities"], abs=1e-12)
        assert a["explanation"]["base"] == pytest.approx(b["explanation"]["base"], abs=2e-6)
        ea = {e["feature"]: e["effect"] for e in a["explanation"]["effects"]}
        eb = {e["feature"]: e["effect"] for e in b["explanation"]["effects"]}
        for f in {*ea, *eb}:
            assert ea.get(f, 0.0) == pytest.approx(eb.get(f, 0.0), abs=2e-6), f
    for one, many in zip(singles, fast[:4], strict=True):  # one record at a time: the same answer as in a batch
        effects = {e["feature"]: e["effect"] for e in many["explanation"]["effects"]}
        assert {e["feature"]: e["effect"] for e in one["explanation"]["effects"]} == pytest.approx(effects, abs=2e-6)
