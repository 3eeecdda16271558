"""The apps framework end to end on small data: train, predict, evaluate, resume, manifest, HTTP, CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.datasets import load_breast_cancer

from luodi import api
from luodi.apps import registry
from luodi.errors import BadRequest, ConfigError, LuodiError


def write_app(tmp_path: Path, name: str, **over) -> Path:
    cfg = {
        "name": name,
        "task": "tabular",
        "data": {
            "format": "sklearn:breast_cancer",
            "columns": {"label": "target", "positive": "malignant"},
            "split": {"valid": 0.25, "seed": 0},
        },
        "model": {"type": "lightgbm", "options": {"n_estimators": 60, "num_leaves": 8}},
        "train": {"epochs": 3, "lr": 0.1, "seed": 0},
        "evaluate": {"metrics": ["roc_auc", "accuracy"]},
    }
    for path, value in over.items():
        node = cfg
        keys = path.split("__")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small diagnosis-like app trained once for the module (LightGBM, 60 rounds)."""
    p = write_app(tmp_path_factory.mktemp("apps"), "t-diag")
    run = api.train(p, progress=False)
    return p, run


def records(n: int = 3) -> list[dict]:
    df = load_breast_cancer(as_frame=True).frame.drop(columns="target")
    return [{k: float(v) for k, v in r.items()} for r in df.iloc[:n].to_dict(orient="records")]


def test_train_writes_a_complete_verified_run(trained):
    _, run = trained
    assert run.status == "done" and run.version.startswith("v")
    for f in (
        "config.yaml",
        "model.lgb.txt",
        "preprocess.json",
        "metrics.json",
        "report.html",
        "manifest.json",
    ):
        assert (run.path / f).is_file(), f
    assert not (run.path / registry.CHECKPOINT_DIR).exists()
    assert not list(run.path.rglob("*.pkl")) and not list(run.path.rglob("*.joblib"))
    man = registry.verify_manifest(run.path)
    assert set(man["files"]) >= {"model.lgb.txt", "preprocess.json", "report.html"}
    assert "lightgbm" in man["libraries"]
    assert run.metrics["roc_auc"] >= 0.97 and run.metrics["accuracy"] >= 0.9
    html = (run.path / "report.html").read_text()
    assert "Confusion matrix" in html and "ROC" in html and "data:image/png;base64" in html
    assert "Feature importance (permutation, roc_auc)" in html
    assert [r["version"] for r in api.list_runs("t-diag")][0] == run.version


def test_predict_single_batch_and_file(trained, tmp_path):
    p, _ = trained
    out = api.predict("t-diag", records(3))
    assert [o["label"] for o in out] == ["malignant"] * 3  # the first three rows are malignant
    assert all(abs(sum(o["probabilities"].values()) - 1) < 1e-6 for o in out)
    f = tmp_path / "in.csv"
    import pandas as pd

    pd.DataFrame(records(5)).to_csv(f, index=False)
    assert len(api.predict(str(p), str(f))) == 5
    folder = tmp_path / "batch"  # a folder: each file's rows in turn, each tagged with its file
    folder.mkdir()
    pd.DataFrame(records(5)[:2]).to_csv(folder / "a.csv", index=False)
    (folder / "b.json").write_text(json.dumps(records(5)[2:]))
    (folder / ".hidden.csv").write_text("not,a,table\n")
    out = api.predict("t-diag", str(folder))
    assert [o["input"] for o in out] == [str(folder / "a.csv")] * 2 + [str(folder / "b.json")] * 3
    direct = api.predict("t-diag", records(5))
    assert [o["probability"] for o in out] == pytest.approx([o["probability"] for o in direct])
    (folder / "notes.md").write_text("# not rows")
    with pytest.raises(LuodiError, match="notes.md"):  # a file the app cannot read is named
        api.predict("t-diag", str(folder))
    with pytest.raises(LuodiError, match="has no files"):
        api.predict("t-diag", str((tmp_path / "empty").mkdir() or tmp_path / "empty"))
    with pytest.raises(LuodiError, match="mean radius"):
        api.predict("t-diag", [{"mean texture": 1.0}])


def test_explain_gives_each_features_effect(trained):
    """--explain / ?explain=true on a LightGBM app: exact TreeSHAP effects on the predicted label's probability,
    largest first, that add up from the base to the served probability; the answer is predict's plus the
    explanation."""
    from luodi.tasks.base import TaskBase

    p, _ = trained
    rec = records(1)[0]
    out = api.predict("t-diag", rec, explain=True)[0]
    plain = api.predict("t-diag", rec)[0]
    assert {k: v for k, v in out.items() if k != "explanation"} == plain and "explanation" not in plain
    ex = out["explanation"]
    assert ex["method"] == "shap" and ex["target"] == f"probability of '{out['label']}'" and ex["effects"]
    sizes = [abs(e["effect"]) for e in ex["effects"]]
    assert sizes == sorted(sizes, reverse=True)
    assert ex["base"] + sum(e["effect"] for e in ex["effects"]) == pytest.approx(out["probability"], abs=1e-5)
    with pytest.raises(BadRequest, match="explanations are available for"):
        TaskBase(api.load_app(p)).explain([rec])


def test_permutation_importance_ranks_signal_above_noise(tmp_path):
    """The report's feature importance: shuffling a pure-noise column costs nothing, the best one costs most."""
    import pandas as pd

    df = load_breast_cancer(as_frame=True).frame
    df["noise"] = np.random.default_rng(0).normal(size=len(df))
    df["target"] = np.where(df["target"] == 0, "malignant", "benign")
    f = tmp_path / "bc.csv"
    df.to_csv(f, index=False)
    p = write_app(tmp_path, "t-importance", data__format=None, data__path=str(f))
    api.train(p, progress=False)
    task = api.load_predictor("t-importance").task
    rows = task.importance(pd.read_csv(f))
    by = {r["feature"]: r["importance"] for r in rows}
    assert set(by) == set(df.columns) - {"target"} and rows[0]["metric"] == "roc_auc"
    # 30 correlated measurements back each other up, so single drops are small; noise ranks among the least
    assert abs(by["noise"]) <= 0.001 and rows[0]["importance"] > 3 * max(by["noise"], 0.001)
    assert [r["feature"] for r in rows].index("noise") >= len(rows) // 2
    assert [r["importance"] for r in rows] == sorted(by.values(), reverse=True)

def test_evaluate_on_a_labelled_file(trained, tmp_path):
    p, _ = trained
    df = load_breast_cancer(as_frame=True)
    frame = df.frame.copy()
    frame["target"] = [df.target_names[i] for i in df.target]
    f = tmp_path / "labelled.csv"
    frame.to_csv(f, index=False)
    res = api.evaluate(str(p), data=str(f))
    assert res["metrics"]["roc_auc"] > 0.98  # mostly training rows: high
    assert Path(res["report"]).is_file()


def test_config_errors_name_the_key(tmp_path):
    bad = write_app(tmp_path, "bad1", train__epoch=3)
    with pytest.raises(ConfigError, match=r"train\.epoch"):
        api.load_app(bad)
    bad = write_app(tmp_path, "bad2", train__epochs="ten")
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        api.load_app(bad)
    bad = write_app(tmp_path, "bad3", model__options={"n_estimator": 3})
    with pytest.raises(ConfigError, match=r"model\.options\.n_estimator"):
        api.train(bad, progress=False)
    bad = write_app(tmp_path, "bad4", data__columns={"label": "nope"})
    with pytest.raises(ConfigError, match="nope"):
        api.train(bad, progress=False)
    assert "properties" in api.config_schema()
    rendered = yaml.safe_load(api.render_config(write_app(tmp_path, "ok")))
    assert rendered["train"]["batch_size"] == 32  # defaults filled in


def test_resume_after_interruption(tmp_path):
    p = write_app(
        tmp_path,
        "t-resume",
        model__type="mlp",
        train__epochs=6,
        train__lr=0.003,
        train__early_stopping=None,
        model__options={"hidden": [16]},
    )
    seen: list[int] = []

    def stop_after_two(epoch, logs):
        seen.append(epoch)
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        api.train(p, progress=False, callbacks=[stop_after_two])
    run = registry.list_runs("t-resume")[0]
    assert run.status == "interrupted"
    assert (run.path / registry.CHECKPOINT_DIR / "mlp" / registry.CHECKPOINT_DIR / "state.json").exists()
    first_part = json.loads((run.path / "elapsed.json").read_text())["train_seconds"]
    assert first_part > 0
    seen.clear()
    done = api.train(p, progress=False, resume=True, callbacks=[lambda e, logs: seen.append(e)])
    assert done.version == run.version and done.status == "done"
    assert done.metrics["train_seconds"] > first_part  # both attempts counted
    assert not (run.path / "elapsed.json").exists()
    assert seen == [3, 4, 5, 6]  # continued from the epoch-2 checkpoint
    hist = json.loads((done.path / "preprocess.json").read_text())["history"]
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4, 5, 6]
    assert done.metrics["roc_auc"] > 0.95


def test_resume_lightgbm_continues_boosting(tmp_path):
    p = write_app(tmp_path, "t-resume-gbm", model__options={"n_estimators": 40, "early_stopping_rounds": 100})

    def stop(epoch, logs):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        api.train(p, progress=False, callbacks=[stop])
    done = api.train(p, progress=False, resume=True)
    assert done.status == "done" and len(registry.list_runs("t-resume-gbm")) == 1
    text = (done.path / "model.lgb.txt").read_text()
    assert text.count("Tree=") == 40


def test_tampered_run_is_refused(tmp_path):
    p = write_app(tmp_path, "t-tamper")
    run = api.train(p, progress=False)
    api.forget_loaded()
    meta = run.path / "preprocess.json"
    meta.write_text(meta.read_text().replace('"positive": 1', '"positive": 0'))
    with pytest.raises(registry.RunIntegrityError, match="preprocess.json"):
        api.predict("t-tamper", records(1))


@pytest.mark.parametrize("sampler", ["grid", "random", "tpe"])
def test_tune_each_sampler(tmp_path, sampler):
    p = write_app(
        tmp_path,
        f"t-tune-{sampler}",
        tune={
            "space": {
                "model.options.num_leaves": [4, 8],
                "train.lr": {"low": 0.05, "high": 0.2, "step": 0.15},
            },
            "trials": 3,
            "metric": "roc_auc",
        },
    )
    res = api.tune(p, sampler=sampler, progress=False)
    assert res["sampler"] == sampler and res["metric"] == "roc_auc"
    assert 1 <= len(res["trials"]) <= 4
    assert res["best_value"] == max(t["value"] for t in res["trials"]) > 0.9
    assert set(res["best_params"]) == {"model.options.num_leaves", "train.lr"}
    # overrides (--set) change the base config the search starts from: here its space
    res = api.tune(p, sampler=sampler, progress=False, overrides={"tune.space": {"model.options.num_leaves": [4]}})
    assert all(t["params"] == {"model.options.num_leaves": 4} for t in res["trials"])


def test_tune_interrupted_then_resumed(tmp_path, monkeypatch):
    """Ctrl-C in the 3rd trial keeps the 2 finished ones (runs/<app>/tune.db); --resume runs only the rest."""
    from luodi.tasks.tabular import TabularTask

    tune = {"space": {"train.lr": {"low": 0.02, "high": 0.3, "log": True}}, "trials": 5, "metric": "roc_auc"}
    p = write_app(tmp_path, "t-tune-resume", tune=tune, train__output_dir=str(tmp_path / "runs"))
    with pytest.raises(BadRequest, match="nothing to resume: no search of this app"):
        api.tune(p, sampler="random", progress=False, resume=True)
    real, seen = TabularTask.fit, []

    def fit(self, *args, **kwargs):
        seen.append(self.config.train.lr)
        if len(seen) == 3:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(TabularTask, "fit", fit)
    with pytest.raises(KeyboardInterrupt):
        api.tune(p, sampler="random", progress=False)
    assert (tmp_path / "runs" / "t-tune-resume" / "tune.db").is_file()
    with pytest.raises(BadRequest, match="used another config"):  # a different search is not continued
        api.tune(p, sampler="tpe", progress=False, resume=True)
    res = api.tune(p, sampler="random", progress=False, resume=True)
    assert res["resumed_after"] == 2 and len(res["trials"]) == 5 and len(seen) == 3 + 3
    assert [t["params"]["train.lr"] for t in res["trials"][:2]] == pytest.approx(seen[:2])
    assert len({round(t["params"]["train.lr"], 9) for t in res["trials"]}) == 5  # no replayed draws
    again = api.tune(p, sampler="random", progress=False, resume=True)  # finished: nothing more runs
    assert again["resumed_after"] == 5 and len(seen) == 6 and again["best_value"] == res["best_value"]
    more = api.tune(p, sampler="random", trials=6, progress=False, resume=True)  # or extend it
    assert len(more["trials"]) == 6 and len(seen) == 7


def test_tune_bad_space_and_ray_hint(tmp_path, monkeypatch):
    p = write_app(tmp_path, "t-tune-bad", tune={"space": {"train.nope": [1, 2]}, "trials": 1})
    with pytest.raises(ConfigError, match="train.nope"):
        api.tune(p, progress=False)
    p = write_app(tmp_path, "t-tune-bad2", tune={"space": {"nope.x": [1, 2]}, "trials": 1})
    with pytest.raises(ConfigError, match=r"'tune\.space\.nope\.x': 'nope' is not a key"):
        api.tune(p, progress=False)
    p = write_app(tmp_path, "t-tune-ray", tune={"space": {"train.lr": [0.1]}, "trials": 1, "metric": "roc_auc"})
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed: `import ray` fails
    with pytest.raises(BadRequest, match=r"needs Ray Tune: install it with `pip install 'luodi\[ray\]'`"):
        api.tune(p, executor="ray", progress=False)
    p = write_app(tmp_path, "t-tune-ray2", tune={"space": {"train.lr": [0.1]}, "trials": 1}, evaluate__metrics=[])
    with pytest.raises(ConfigError, match="--executor ray needs the metric"):  # checked before Ray is needed
        api.tune(p, executor="ray", progress=False)


def test_cv_folds(tmp_path):
    p = write_app(tmp_path, "t-cv")
    res = api.cv(p, folds=3, progress=False)
    assert len(res["per_fold"]) == 3
    assert res["mean"]["roc_auc"] > 0.95 and res["std"]["roc_auc"] < 0.05


def test_set_overrides_change_one_command_and_name_bad_keys(tmp_path):
    from typer.testing import CliRunner

    from luodi.cli import app

    p = write_app(tmp_path, "t-set")
    r = CliRunner().invoke(app, ["config", "render", str(p), "--set", "data.split.seed=3", "--set", "train.lr=0.05"])
    assert r.exit_code == 0, r.output
    rendered = yaml.safe_load(r.stdout)
    assert rendered["data"]["split"]["seed"] == 3 and rendered["train"]["lr"] == 0.05
    assert yaml.safe_load(p.read_text())["data"]["split"]["seed"] == 0  # the file itself is untouched
    for bad, needle in [
        ("train.epochz=3", "train.epochz"),
        ("nope.x=1", "'nope' is not a key"),
        ("train.epochs=ten", "train.epochs"),
        ("train.epochs", "expected a dotted key"),
    ]:
        r = CliRunner().invoke(app, ["config", "render", str(p), "--set", bad])
        assert r.exit_code == 2 and needle in r.output, (bad, r.output)
    # a run records the overridden config; train and cv see the override
    run = api.train(p, progress=False, overrides={"model.options.n_estimators": 7})
    saved = yaml.safe_load((run.path / "config.yaml").read_text())
    assert saved["model"]["options"]["n_estimators"] == 7
    seeds = [api.cv(p, folds=3, progress=False, overrides={"train.seed": s})["per_fold"] for s in (0, 1)]
    assert seeds[0] != seeds[1]  # fold assignment follows train.seed


def test_cli_verbs(trained, tmp_path):
    from typer.testing import CliRunner

    from luodi.cli import app

    p, run = trained
    r = CliRunner().invoke(app, ["runs", "t-diag", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)[0]["version"] == run.version
    r = CliRunner().invoke(app, ["runs", "t-diag"])  # the runner's 80 columns: one block per run, untruncated
    assert r.exit_code == 0 and f"t-diag {run.version}" in r.stdout
    assert "roc_auc=" in r.stdout and "…" not in r.stdout
    f = tmp_path / "one.json"
    f.write_text(json.dumps(records(1)[0]))
    r = CliRunner().invoke(app, ["predict", str(p), "--input", str(f)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.strip().splitlines()[-1])["label"] == "malignant"
    r = CliRunner().invoke(app, ["config", "render", str(write_app(tmp_path, "x", train__epochz=1))])
    assert r.exit_code == 2 and "train.epochz" in r.output


def test_promote_pins_the_served_version_for_api_cli_and_http(tmp_path):
    """A worse v2 need not be served: `luodi promote APP v1` rolls back (store-wide), `--latest` follows training
    again; ?version= predicts with any finished run; an unfinished or tampered run cannot be promoted."""
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from luodi.cli import app
    from luodi.serve.app import create_app
    from luodi.settings import get_settings

    p = write_app(tmp_path, "t-promote", model__options={"n_estimators": 5, "num_leaves": 4})
    v1 = api.train(p, progress=False)
    v2 = api.train(write_app(tmp_path, "t-promote", model__options={"n_estimators": 60}), progress=False)
    rec = records(1)[0]
    p1, p2 = (api.predict("t-promote", rec, version=v)[0]["probability"] for v in (v1.version, v2.version))
    assert p1 != p2 and api.predict("t-promote", rec)[0]["probability"] == p2  # the latest serves by default
    res = CliRunner().invoke(app, ["promote", "t-promote", v1.version])
    assert res.exit_code == 0 and f"serves {v1.version} (pinned)" in res.stdout, res.output
    assert api.predict("t-promote", rec)[0]["probability"] == p1
    runs = {r["version"]: r for r in api.list_runs("t-promote")}
    assert runs[v1.version]["served"] and runs[v1.version]["pinned"] and not runs[v2.version]["served"]
    res = CliRunner().invoke(app, ["runs", "t-promote"])
    assert "served (pinned)" in res.stdout
    v3 = api.train(p, progress=False)  # training more does not change what is served while pinned
    assert api.predict("t-promote", rec)[0]["probability"] == p1
    settings = get_settings().model_copy(update={"auth": "off"})
    with TestClient(create_app(settings, preload=False)) as c:
        r = c.post("/v1/apps/t-promote/predict", json=rec)
        assert r.json()["version"] == v1.version and r.json()["probability"] == p1
        r = c.post(f"/v1/apps/t-promote/predict?version={v2.version}", json={"inputs": [rec]})
        assert r.json()["version"] == v2.version and r.json()["outputs"][0]["probability"] == p2
        r = c.post("/v1/apps/t-promote/predict?version=v99", json=rec)
        assert r.status_code == 404 and "versions:" in r.json()["error"]["message"]
        r = c.post("/v1/apps/t-promote/promote", json={"version": "v99"})
        assert r.status_code == 404
        r = c.post("/v1/apps/t-promote/promote", json={"version": v2.version})
        assert r.status_code == 200 and r.json()["version"] == v2.version and r.json()["pinned"]
        assert c.post("/v1/apps/t-promote/predict", json=rec).json()["version"] == v2.version
        r = c.post("/v1/apps/t-promote/promote", json={"version": None})
        assert r.json()["version"] == v3.version and not r.json()["pinned"]
        assert c.post("/v1/apps/t-promote/promote", json={}).status_code == 422  # version must be given
    res = CliRunner().invoke(app, ["promote", "t-promote"])
    assert res.exit_code == 2 and "--latest" in res.output
    registry.set_status("t-promote", v2.version, "interrupted")
    with pytest.raises(LuodiError, match="interrupted, not finished"):
        api.promote("t-promote", v2.version)
    (v1.path / "preprocess.json").write_text("{}")
    with pytest.raises(registry.RunIntegrityError, match="preprocess.json"):
        api.promote(p, v1.version)
    assert api.list_runs("t-promote")[0]["served"]  # still following the latest
    with pytest.raises(LuodiError, match="no finished run"):
        api.promote("t-never-trained", None)

def test_http_routes(trained):
    from fastapi.testclient import TestClient

    from luodi.serve.app import create_app
    from luodi.settings import get_settings

    settings = get_settings().model_copy(update={"auth": "off"})
    with TestClient(create_app(settings, preload=False)) as c:
        apps = c.get("/v1/apps").json()["data"]
        assert "t-diag" in [a["name"] for a in apps]
        rec = records(2)
        r = c.post("/v1/apps/t-diag/predict", json=rec[0])
        assert r.status_code == 200 and r.json()["label"] == "malignant"
        r = c.post("/v1/apps/t-diag/predict", json={"inputs": rec})
        assert r.status_code == 200 and len(r.json()["outputs"]) == 2
        assert all("explanation" not in o for o in r.json()["outputs"])
        r = c.post("/v1/apps/t-diag/predict?explain=true", json={"inputs": rec})
        assert all(o["explanation"]["effects"][0]["feature"] for o in r.json()["outputs"])
        bad = dict(rec[0])
        del bad["mean radius"]
        r = c.post("/v1/apps/t-diag/predict", json=bad)
        assert r.status_code == 422 and "mean radius" in r.text
        r = c.post("/v1/apps/t-diag/predict", json={**rec[0], "worst area": "large"})
        assert r.status_code == 422 and "worst area" in r.text
        r = c.post("/v1/apps/t-diag/predict", json={"inputs": [rec[0], {"mean radius": 1}]})
        assert r.status_code == 422 and "inputs[1]" in r.text
        for number in ("1e400", "NaN"):  # Python's json reads both; JSON cannot echo them back
            body = json.dumps({**rec[0], "mean radius": 0.5}).replace("0.5", number)
            r = c.post("/v1/apps/t-diag/predict", content=body, headers={"Content-Type": "application/json"})
            assert r.status_code == 422 and "'mean radius': Input should be a finite number" in r.text, r.text
        assert c.post("/v1/apps/no-such-app/predict", json=rec[0]).status_code == 404
        # files: read as `luodi predict --input` reads them, each output tagged with its file's name
        import pandas as pd

        csv = pd.DataFrame(records(3)[:2]).to_csv(index=False).encode()
        files = [("files", ("a.csv", csv, "text/csv")), ("files", ("b.json", json.dumps(records(3)[2:]), "x"))]
        r = c.post("/v1/apps/t-diag/predict/files", files=files)
        assert r.status_code == 200, r.text
        outs = r.json()["outputs"]
        assert [o["input"] for o in outs] == ["a.csv", "a.csv", "b.json"] and "explanation" not in outs[0]
        r = c.post("/v1/apps/t-diag/predict/files?explain=true", files=files)
        assert [o["explanation"]["effects"][0]["feature"] for o in r.json()["outputs"]]
        direct = c.post("/v1/apps/t-diag/predict", json={"inputs": records(3)}).json()["outputs"]
        assert [o["probability"] for o in outs] == pytest.approx([o["probability"] for o in direct])
        r = c.post("/v1/apps/t-diag/predict/files", files=[("files", ("empty.csv", b"mean radius\n", "text/csv"))])
        assert r.status_code == 400 and "empty.csv" in r.json()["error"]["message"]
        r = c.post("/v1/apps/t-diag/predict/files", files=[("files", ("x.csv", b"mean radius\n1\n", "text/csv"))])
        assert r.status_code == 400 and r.json()["error"]["message"].startswith("x.csv: ")  # names the file
        assert "mean texture" in r.json()["error"]["message"]
        assert c.post("/v1/apps/t-diag/predict/files").status_code == 422  # no files part
        assert c.post("/v1/apps/nope/predict/files", files=files).status_code == 404
        runs = c.get("/v1/apps/t-diag/runs").json()["data"]
        assert runs[0]["status"] == "done"
        rep = c.get(runs[0]["report_url"])
        assert rep.status_code == 200 and "<html" in rep.text
        spec = c.get("/openapi.json").json()  # the app trained before start-up has its typed route
        typed = spec["paths"]["/v1/apps/t-diag/predict"]["post"]
        one = typed["requestBody"]["content"]["application/json"]["schema"]["oneOf"][0]
        assert "mean radius" in one["properties"] and "mean radius" in one["required"]
        assert typed["tags"] == ["apps"] and typed["summary"] == "Predict with app 't-diag'"


def test_uploads_are_read_in_memory(trained, monkeypatch):
    """Uploaded files reach the app's reader from memory (no temporary file or folder), named like the upload,
    in each format the readers take: rows of a table app, texts of a text app."""
    import tempfile

    import pandas as pd
    from fastapi.testclient import TestClient

    from luodi.data.inmemory import InMemoryFile
    from luodi.data.text import read_text_inputs
    from luodi.serve.app import create_app
    from luodi.settings import get_settings

    def refuse(*args, **kwargs):
        raise AssertionError("an upload was written to a temporary file")

    rows = records(3)
    with TestClient(create_app(get_settings().model_copy(update={"auth": "off"}), preload=False)) as c:
        monkeypatch.setattr(tempfile, "mkdtemp", refuse)
        monkeypatch.setattr(tempfile, "mkstemp", refuse)
        files = [
            ("files", ("rows.parquet", _parquet(pd.DataFrame(rows[:1])), "application/octet-stream")),
            ("files", ("rows.jsonl", "\n".join(json.dumps(r) for r in rows[1:]).encode(), "x")),
        ]
        r = c.post("/v1/apps/t-diag/predict/files", files=files)
        assert r.status_code == 200, r.text
        assert [o["input"] for o in r.json()["outputs"]] == ["rows.parquet", "rows.jsonl", "rows.jsonl"]
        direct = api.predict("t-diag", rows)
        assert [o["probability"] for o in r.json()["outputs"]] == pytest.approx([o["probability"] for o in direct])
        r = c.post("/v1/apps/t-diag/predict/files", files=[("files", ("bad.parquet", b"PAR1 not parquet", "x"))])
        assert r.status_code == 400 and "bad.parquet" in r.json()["error"]["message"]
        monkeypatch.setattr("luodi.serve.uploads.MAX_UPLOAD_BYTES", 64)
        r = c.post("/v1/apps/t-diag/predict/files", files=[("files", ("big.csv", b"mean radius\n" + b"1\n" * 40, "x"))])
        assert r.status_code == 413 and "'big.csv' is larger than" in r.json()["error"]["message"]
    texts = {
        "q.txt": (b"where is my card\n\nI lost my PIN\n", ["where is my card", "I lost my PIN"]),
        "q.json": (b'["hi", "bye"]', ["hi", "bye"]),
        "q.csv": (b"text,label\nhello there,greet\n", ["hello there"]),
    }
    for name, (data, want) in texts.items():
        with InMemoryFile.holding(name, data) as f:
            assert [r["text"] for r in read_text_inputs(f)] == want, name
    with InMemoryFile.holding("img.png", b"\x89PNG\0\0") as f, pytest.raises(BadRequest, match="img.png"):
        read_text_inputs(f)  # a binary file is refused, and named


def _parquet(df) -> bytes:
    import io

    buf = io.BytesIO()
    df.to_parquet(buf)
    return buf.getvalue()


def test_typed_routes_come_at_startup_and_on_promote(tmp_path):
    """An app trained while the server runs is served by the generic route; promoting it (HTTP) gives it its
    typed route, with its own input schema, on the running server. The typed route asks for the API key too."""
    from fastapi.testclient import TestClient

    from luodi.serve.app import create_app
    from luodi.settings import get_settings

    settings = get_settings().model_copy(update={"auth": "off"})
    with TestClient(create_app(settings, preload=False)) as c:
        api.train(write_app(tmp_path, "t-late", model__options={"n_estimators": 5}), progress=False)
        assert "/v1/apps/t-late/predict" not in c.get("/openapi.json").json()["paths"]
        generic = c.post("/v1/apps/t-late/predict", json=records(1)[0])
        assert generic.status_code == 200 and generic.json()["app"] == "t-late"
        assert c.post("/v1/apps/t-late/promote", json={"version": None}).status_code == 200
        spec = c.get("/openapi.json").json()
        typed = spec["paths"]["/v1/apps/t-late/predict"]["post"]
        assert "mean radius" in typed["requestBody"]["content"]["application/json"]["schema"]["oneOf"][0]["required"]
        assert c.post("/v1/apps/t-late/predict", json=records(1)[0]).json() == generic.json()
        r = c.post("/v1/apps/t-late/predict", json={"inputs": [{"mean radius": 1}]})
        assert r.status_code == 422 and "inputs[0]" in r.text
    keyed = get_settings().model_copy(update={"auth": "on"})
    with TestClient(create_app(keyed, preload=False)) as c:  # refreshed at start-up, guarded like the rest
        assert "/v1/apps/t-late/predict" in c.get("/openapi.json").json()["paths"]
        assert c.post("/v1/apps/t-late/predict", json=records(1)[0]).status_code == 401


def test_http_requests_to_an_app_are_batched(tmp_path):
    """Concurrent POST /v1/apps/{name}/predict requests on a live app share predict calls; answers match."""
    import threading

    from fastapi.testclient import TestClient

    from luodi import api
    from luodi.serve import apps_routes
    from luodi.serve.app import create_app
    from luodi.settings import get_settings

    p = write_app(tmp_path, "t-batched", serve={"batch_size": 16, "max_wait_ms": 20})
    api.train(p, progress=False)
    recs = records(12)
    want = [o["probability"] for o in api.predict("t-batched", recs)]
    settings = get_settings().model_copy(update={"auth": "off"})
    with TestClient(create_app(settings, preload=False)) as c:
        got: dict[int, float] = {}

        def one(i: int) -> None:
            r = c.post("/v1/apps/t-batched/predict", content=json.dumps(recs[i]),
                       headers={"Content-Type": "application/json"})
            got[i] = r.json()["probability"]

        threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        batcher = next(b for loop in apps_routes._batchers.values() for k, b in loop.items() if k[0] == "t-batched")
    assert [got[i] for i in range(12)] == pytest.approx(want)
    assert batcher.requests == 12 and batcher.batches < 12

def test_split_is_seeded_stratified_and_holds_out_classes():
    import pandas as pd

    from luodi.data.split import split_frame

    df = pd.DataFrame({"x": np.arange(200), "y": ["a"] * 150 + ["b"] * 40 + ["c"] * 10})
    tr, va = split_frame(df, {"valid": 0.25, "seed": 1, "holdout": {"y": ["c"]}}, "y")
    assert "c" not in set(tr.y) and (va.y == "c").sum() == 10
    assert abs((va.y == "b").sum() - 10) <= 1  # stratified: 40 * 0.25
    tr2, _ = split_frame(df, {"valid": 0.25, "seed": 1, "holdout": {"y": ["c"]}}, "y")
    assert tr.x.tolist() == tr2.x.tolist()


def test_demo_apps_train_once():
    # the demo folder also holds the customer-service assistant, which is prepared elsewhere, never trained
    first = api.ensure_demo_apps(names=["diagnosis", "customer-service"])
    assert [d["app"] for d in first] == ["diagnosis"]
    assert first[0]["app"] == "diagnosis" and first[0]["status"] in ("trained", "ready")
    assert first[0]["metrics"]["roc_auc"] >= 0.99
    again = api.ensure_demo_apps(names=["diagnosis"])
    assert again[0]["status"] == "ready" and again[0]["version"] == first[0]["version"]
    assert api.predict("diagnosis", records(1))[0]["label"] == "malignant"


def test_tune_on_ray_interrupted_resumed_and_equal_to_local(tmp_path):
    """Ctrl-C during `luodi tune --executor ray` (a local one-CPU Ray): Tune saves its state, the CLI exits 130
    with the resume hint; `--resume` restores that experiment (Tuner.restore) and runs only the trials that had
    not finished. The scores equal Optuna's in this process (same seeds, same data)."""
    pytest.importorskip("ray.tune", reason="Ray Tune is not installed: pip install 'luodi[ray]'")
    import os
    import signal
    import subprocess
    import sys
    import time

    space = {"model.options.num_leaves": [4, 8, 16], "train.lr": [0.03, 0.05, 0.1, 0.2]}
    tune = {"space": space, "trials": 12, "metric": "roc_auc"}
    runs = tmp_path / "runs"
    p = write_app(tmp_path, "t-ray-resume", tune=tune, train__output_dir=str(runs))
    with pytest.raises(BadRequest, match="no Ray search of this app"):
        api.tune(p, sampler="grid", executor="ray", cpus=1, progress=False, resume=True)
    cmd = [sys.executable, "-c", "from luodi.cli import main; main()", "tune", str(p), "--executor", "ray",
           "--cpus", "1", "--sampler", "grid"]
    proc = subprocess.Popen(cmd, env={**os.environ, "COLUMNS": "200"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while not [f for f in runs.glob("t-ray-resume/ray/*/*/result.json") if f.stat().st_size]:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "--resume" in out, out
    # the trials that had finished when Tune stopped (however many finished between the signal and the stop)
    finished = {f.parent.name: f.read_text() for f in runs.glob("t-ray-resume/ray/*/*/result.json") if f.stat().st_size}
    with pytest.raises(BadRequest, match="another config, sampler, --folds or --trials"):
        api.tune(p, sampler="random", executor="ray", cpus=1, progress=False, resume=True)
    res = api.tune(p, sampler="grid", executor="ray", cpus=1, progress=False, resume=True)
    assert 1 <= res["resumed_after"] < 12 and res["failed_trials"] == 0
    pairs = {tuple(t["params"][k] for k in space) for t in res["trials"]}
    assert len(pairs) == 12 == len(res["trials"])  # the whole grid, each point once
    assert len(list(runs.glob("t-ray-resume/ray/*/"))) == 1  # the same experiment, continued
    assert len(finished) == res["resumed_after"]  # those were kept, not run again:
    for trial, result in finished.items():
        assert next(runs.glob(f"t-ray-resume/ray/*/{trial}/result.json")).read_text() == result, trial
    local = api.tune(p, sampler="grid", progress=False)

    def by_params(r: dict) -> dict:
        return {tuple(t["params"][k] for k in space): t["value"] for t in r["trials"]}

    assert res["metric"] == "roc_auc" and by_params(res) == pytest.approx(by_params(local))
    assert res["best_value"] == max(by_params(res).values()) > 0.9

def test_refit_serves_a_model_of_all_rows_and_keeps_the_held_out_score(tmp_path):
    opts = {"n_estimators": 60, "num_leaves": 8, "inner_folds": 3}
    metrics = ["roc_auc", "accuracy", "brier"]
    p = write_app(tmp_path, "t-refit", model__options=opts, train__refit=True, evaluate__metrics=metrics)
    run = api.train(p, progress=False)
    m = json.loads((run.path / "metrics.json").read_text())
    assert m["refit_rows"] == 569 == m["train_rows"] + m["valid_rows"]
    plain = api.train(write_app(tmp_path, "t-norefit", model__options=opts, evaluate__metrics=metrics), progress=False)
    held_out = json.loads((plain.path / "metrics.json").read_text())["valid"]
    assert m["valid"] == pytest.approx(held_out)  # the reported score is the one before the refit
    ev = api.evaluate(p)  # the served model has seen the validation rows: better on them, and says so
    assert "refit" in ev["note"] and ev["metrics"]["brier"] < held_out["brier"]
    assert "note" not in api.evaluate(plain.path / "config.yaml")
    with pytest.raises(ConfigError, match="train.refit.*validation rows"):
        api.train(write_app(tmp_path, "t-refit-bad", train__refit=True), progress=False)
    assert not registry.list_runs("t-refit-bad")  # refused before a run was created
