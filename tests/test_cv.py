"""`luodi cv`: k folds of the whole dataset (every row validated once), or of the training part only."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from test_apps import write_app
from typer.testing import CliRunner

from luodi import api
from luodi.cli import app as cli
from luodi.errors import ConfigError
from luodi.tasks import task_for


def test_folds_validate_every_row_exactly_once(tmp_path):
    cfg = api.load_app(write_app(tmp_path, "t-cv-rows"))
    task = task_for(cfg)
    data = task.read(None)
    parts = task.folds(data, 4, seed=0)
    valid = pd.concat([va for _, va in parts], ignore_index=True)
    key = list(data.columns)
    assert len(valid) == len(data) == 569
    assert not valid.duplicated().any()  # the 569 breast-cancer rows are distinct
    assert valid.sort_values(key).reset_index(drop=True).equals(data.sort_values(key).reset_index(drop=True))
    for tr, va in parts:  # no fold is validated on rows it was fit on
        assert len(tr) + len(va) == len(data)
        assert pd.merge(tr, va, on=key).empty


def test_cv_whole_dataset_and_train_only(tmp_path):
    p = write_app(tmp_path, "t-cv-scope", evaluate__metrics=["accuracy", "roc_auc"])
    res = api.cv(p, folds=3, progress=False)
    assert res["scope"] == "whole dataset" and res["rows"] == 569
    assert sorted(res["fold_sizes"]) == [189, 190, 190] and len(res["per_fold"]) == 3
    assert list(res["mean"])[:2] == ["accuracy", "roc_auc"]  # the app's metrics first
    aucs = [f["roc_auc"] for f in res["per_fold"]]
    assert res["mean"]["roc_auc"] == pytest.approx(np.mean(aucs))
    assert res["std"]["roc_auc"] == pytest.approx(np.std(aucs))
    assert res["mean"]["roc_auc"] > 0.95 and res["mean"]["accuracy"] > 0.9
    train_only = api.cv(p, folds=3, progress=False, train_only=True)
    assert train_only["scope"] == "training part" and train_only["rows"] == 426  # 75 % of 569 (valid: 0.25)
    assert sum(train_only["fold_sizes"]) == 426


def test_cv_cli_prints_folds_and_mean_std(tmp_path):
    p = write_app(tmp_path, "t-cv-cli")
    runner = CliRunner()
    r = runner.invoke(cli, ["cv", str(p), "--folds", "3"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "whole dataset, 569 rows" in r.output and "mean ± std" in r.output and "roc_auc" in r.output
    r = runner.invoke(cli, ["cv", str(p), "--folds", "3", "--train-only", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["rows"] == 426 and len(out["per_fold"]) == 3 and set(out["mean"]) == set(out["std"])


def test_cv_bad_folds_is_a_clear_error(tmp_path):
    p = write_app(tmp_path, "t-cv-bad")
    with pytest.raises(ConfigError, match="folds"):
        api.cv(p, folds=1, progress=False)
    r = CliRunner().invoke(cli, ["cv", str(p), "--folds", "1"])
    assert r.exit_code == 2 and "folds" in r.output


def test_cv_interrupted_then_resumed(tmp_path, monkeypatch):
    """Ctrl-C in fold 3 of 4 keeps folds 1-2 (runs/<app>/cv.json); --resume fits only folds 3-4, same result."""
    from luodi.errors import BadRequest
    from luodi.tasks.tabular import TabularTask

    p = write_app(tmp_path, "t-cv-resume", train__output_dir=str(tmp_path / "runs"))
    whole = api.cv(p, folds=4, progress=False)
    with pytest.raises(BadRequest, match="another config"):  # the finished 4-fold CV is not a 3-fold one
        api.cv(p, folds=3, progress=False, resume=True)
    real, fits = TabularTask.fit, []

    def fit(self, *args, **kwargs):
        fits.append(1)
        if len(fits) == 3:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(TabularTask, "fit", fit)
    with pytest.raises(KeyboardInterrupt):
        api.cv(p, folds=4, progress=False)
    stored = json.loads((tmp_path / "runs" / "t-cv-resume" / "cv.json").read_text())
    assert sorted(stored["per_fold"]) == ["0", "1"]
    res = api.cv(p, folds=4, progress=False, resume=True)
    assert len(fits) == 3 + 2  # only the two unfinished folds were fitted again
    assert res["per_fold"] == whole["per_fold"] and res["mean"] == whole["mean"]
    r = CliRunner().invoke(cli, ["cv", str(p), "--folds", "4", "--train-only", "--resume"])
    assert r.exit_code == 2 and "another config, --folds or" in r.output and "run without --resume" in r.output


def test_tune_with_folds_scores_a_trial_as_cv_scores_the_training_part(tmp_path):
    """tune.folds > 1: a trial's value is the k-fold mean that `luodi cv --train-only` gives with its values."""
    tune = {"space": {"train.lr": [0.05]}, "trials": 1, "metric": "roc_auc", "folds": 3}
    p = write_app(tmp_path, "t-cv-tune", tune=tune)
    trial = api.tune(p, sampler="grid", progress=False)["trials"][0]
    same = api.cv(p, folds=3, progress=False, train_only=True, overrides={"train.lr": 0.05})
    assert trial["params"] == {"train.lr": 0.05}
    assert trial["value"] == pytest.approx(same["mean"]["roc_auc"])
    other = api.cv(p, folds=3, progress=False, train_only=True, overrides={"train.lr": 0.2})
    assert other["mean"]["roc_auc"] != pytest.approx(trial["value"])  # the value depends on the trial's params
