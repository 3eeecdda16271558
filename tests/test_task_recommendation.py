"""recommendation task: BPMF on synthetic and MovieLens data, top-k API, persistence, resume, errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from luodi.config import AppConfig, load_app_config, validate_app
from luodi.errors import BadRequest, ConfigError, NotFound
from luodi.tasks import task_for
from luodi.tasks.recommendation import ndcg_at_k

REPO = Path(__file__).resolve().parents[1]
SLOW = pytest.mark.skipif(os.environ.get("LUODI_SLOW") != "1", reason="slow: set LUODI_SLOW=1")


@pytest.fixture(scope="module")
def ratings_file(tmp_path_factory) -> Path:
    """u.data-style ratings from a rank-3 taste model: 150 users x 120 items, 35% observed, 1-5 stars."""
    rng = np.random.default_rng(0)
    p, q = rng.normal(0, 1, (150, 3)), rng.normal(0, 1, (120, 3))
    item_bias = rng.normal(0, 0.5, 120)
    score = 3.2 + p @ q.T * 0.6 + item_bias[None]
    users, items = np.nonzero(rng.random((150, 120)) < 0.35)
    rating = np.clip(np.round(score[users, items] + rng.normal(0, 0.3, len(users))), 1, 5).astype(int)
    path = tmp_path_factory.mktemp("ratings") / "u.data"
    pd.DataFrame({"u": users + 1, "i": items + 1, "r": rating, "t": 880000000}).to_csv(
        path, sep="\t", header=False, index=False
    )
    return path


def rec_config(path: Path, **options) -> AppConfig:
    return validate_app(
        {
            "name": "recs",
            "task": "recommendation",
            "data": {"path": str(path), "split": {"valid": 0.2, "seed": 1}},
            "model": {
                "type": "bpmf",
                "options": {"factors": 5, "iterations": 60, "burn_in": 20, "thin": 2, **options},
            },
        }
    )


@pytest.fixture(scope="module")
def trained(ratings_file, tmp_path_factory):
    task = task_for(rec_config(ratings_file))
    tr, va = task.split(task.read(None))
    assert task.fit(tr, va, tmp_path_factory.mktemp("rec-run"), progress=False) is None  # callers evaluate
    return task, tr, va, task.evaluate(va)


def test_learns_ratings_far_better_than_baselines(trained):
    task, tr, va, metrics = trained
    mean_rmse = float(np.sqrt(np.mean((va["rating"] - tr["rating"].mean()) ** 2)))
    item_mean = va["item"].map(tr.groupby("item")["rating"].mean()).fillna(tr["rating"].mean())
    item_rmse = float(np.sqrt(np.mean((va["rating"] - item_mean) ** 2)))
    assert metrics["rmse"] < 0.75 * item_rmse < mean_rmse, (metrics, item_rmse, mean_rmse)
    assert 0 < metrics["ndcg@10"] <= 1 and 0 <= metrics["recall@10"] <= 1
    assert len(task.history) >= 2 and "train_rmse" in task.history[0]


def test_top_k_excludes_seen_items_and_rates_pairs(trained):
    task, tr, _, _ = trained
    user = tr["user"].iloc[0]
    seen = set(tr.loc[tr["user"] == user, "item"])
    out = task.predict([{"user_id": int(user), "k": 7}, {"user_id": user, "item_id": tr["item"].iloc[0]}])
    items = [x["item_id"] for x in out[0]["items"]]
    assert len(items) == 7 == len(set(items)) and not seen & set(items) and out[0]["cold_start"] is False
    task.meta["popularity"] = 0.0  # rank by predicted rating alone
    try:
        scores = [x["score"] for x in task.predict([{"user_id": user, "k": 7}])[0]["items"]]
    finally:
        task.meta["popularity"] = 2.0
    assert scores == sorted(scores, reverse=True)
    assert 1 <= out[1]["rating"] <= 5 and out[1]["cold_start"] is False
    with_seen = task.predict([{"user_id": user, "k": 200, "exclude_seen": False}])[0]["items"]
    assert len(with_seen) == tr["item"].nunique()  # k larger than the catalogue: all items
    cold = task.predict([{"user_id": "new-user", "k": 3}])[0]
    assert cold["cold_start"] is True and len(cold["items"]) == 3


def test_save_load_round_trip_gives_identical_predictions(trained, tmp_path):
    task, tr, va, _ = trained
    task.save(tmp_path)
    again = task_for(task.config)
    again.load(tmp_path)
    recs = [{"user_id": u, "k": 5} for u in tr["user"].unique()[:10]] + [{"user_id": "3", "item_id": "4"}]
    assert again.predict(recs) == task.predict(recs)
    assert again.evaluate(va)["rmse"] == pytest.approx(task.evaluate(va)["rmse"])


def test_bad_inputs_give_clear_errors(trained, tmp_path):
    task = trained[0]
    with pytest.raises(BadRequest, match="'user_id' is required"):
        task.predict([{"k": 3}])
    with pytest.raises(BadRequest, match="'k' must be an integer"):
        task.predict([{"user_id": "1", "k": 0}])
    with pytest.raises(BadRequest, match="'k' must be an integer"):
        task.predict([{"user_id": "1", "k": "ten"}])
    with pytest.raises(NotFound):
        task_for(task.config).load(tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,item_id,stars\n1,2,5\n")
    with pytest.raises(ConfigError, match="data.columns.rating"):
        task_for(rec_config(bad)).read(None)
    bad.write_text("user_id,item_id,rating\n1,2,five\n")
    with pytest.raises(ConfigError, match="not a number"):
        task_for(rec_config(bad)).read(None)
    with pytest.raises(ConfigError, match="unknown key 'model.options.rank' — expected one of factors, iterations"):
        rec_config(bad, rank=3)
    with pytest.raises(ConfigError, match=r"'model.options': burn_in \(60\) must be less than iterations \(60\)"):
        rec_config(bad, burn_in=60)
    with pytest.raises(ConfigError, match="'model.options.factors': Input should be less than or equal to 200"):
        rec_config(bad, factors=500)


def test_interrupted_sampling_resumes_to_the_same_model(ratings_file, tmp_path):
    cfg = rec_config(ratings_file, iterations=50, burn_in=10)
    full = task_for(cfg)
    tr, va = full.split(full.read(None))
    full.fit(tr, None, tmp_path / "a", progress=False)

    task = task_for(cfg)

    def stop(epoch, logs):
        raise KeyboardInterrupt

    task.callbacks.append(stop)
    with pytest.raises(KeyboardInterrupt):
        task.fit(tr, None, tmp_path / "b", progress=False)
    resumed = task_for(cfg)
    resumed.fit(tr, None, tmp_path / "b", progress=False)
    assert resumed.history[0]["epoch"] == 50  # continued after the checkpoint at 25
    assert np.allclose(resumed.users, full.users) and np.allclose(resumed.ib, full.ib)


def test_ndcg():
    assert ndcg_at_k([[1, 2, 3]], [{1}], 3) == 1.0
    assert ndcg_at_k([[2, 1, 3]], [{1}], 3) == pytest.approx(1 / np.log2(3))
    assert ndcg_at_k([[4, 5, 6]], [{1}], 3) == 0.0


def test_movielens_reader_and_quick_fit(datasets_dir, tmp_path):
    cfg = load_app_config(REPO / "examples" / "recommendation.yaml")
    task = task_for(cfg)
    data = task.read(None)
    assert len(data) == 100_000 and data["rating"].between(1, 5).all()
    cfg.model.options.update(iterations=30, burn_in=10)
    tr, va = task.split(data)
    fitted = task_for(cfg)
    fitted.fit(tr, va, tmp_path, progress=False)
    m = fitted.evaluate(va)
    assert m["rmse"] < 0.95, m  # global-mean baseline ~1.13, item-mean ~1.03


@SLOW
def test_movielens_5fold_rmse(datasets_dir, tmp_path):
    task = task_for(load_app_config(REPO / "examples" / "recommendation.yaml"))
    data = task.read(None)
    rmses = []
    for n, (tr, va) in enumerate(task.folds(data, 5, seed=0)):
        fold = task_for(task.config)
        fold.fit(tr, va, tmp_path / str(n), progress=False)
        rmses.append(fold.evaluate(va)["rmse"])
    assert np.mean(rmses) <= 0.90, rmses
