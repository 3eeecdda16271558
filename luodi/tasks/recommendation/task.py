"""The recommendation task: reads ratings, fits BPMF (bpmf.py), and serves the posterior mean as a two-tower
model (user matrix, item matrix, biases): predicted ratings of pairs and top-k items per user.

Because the average of p_u·q_i over S kept draws equals one dot product of the draws laid side by side (each
scaled by 1/sqrt(S)), top-k is one matrix-vector product. Progress is shown per iteration; a checkpoint is
written every 25 iterations to run_dir/checkpoint and resumed from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field
from rich.progress import Progress
from safetensors.numpy import load, save_file

from luodi import crypto
from luodi.atomic import atomic_path, write_json
from luodi.config import AppConfig, model_options
from luodi.errors import BadRequest, ConfigError, NotFound
from luodi.options.recommendation import RecommendationOptions
from luodi.tasks.base import TaskBase
from luodi.tasks.onnx_recommendation import OnnxTowers, RecommendationOptimizing
from luodi.tasks.recommendation.bpmf import BPMF
from luodi.tasks.recommendation.ratings import read_item_names, read_ratings
from luodi.train import CHECKPOINT_DIR

WEIGHTS = "recommender.safetensors"
META = "recommender.json"


# --- ranking metrics -----------------------------------------------------------------------------------


def ndcg_at_k(ranked: list[list[int]], relevant: list[set[int]], k: int = 10) -> float:
    """Mean NDCG@k with binary relevance over users that have at least one relevant item."""
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    scores = []
    for rk, rel in zip(ranked, relevant, strict=True):
        if not rel:
            continue
        gains = np.array([1.0 if i in rel else 0.0 for i in rk[:k]])
        ideal = disc[: min(k, len(rel))].sum()
        scores.append(float((gains * disc[: len(gains)]).sum() / ideal))
    return float(np.mean(scores)) if scores else 0.0


# --- the task ------------------------------------------------------------------------------------------


class RecommendationInput(BaseModel):
    user_id: str | int = Field(description="the user to recommend for (or to predict a rating of)")
    item_id: str | int | None = Field(
        None, description="with item_id: predict this user's rating of the item"
    )
    k: int = Field(10, ge=1, le=1000, description="number of items to recommend (top-k)")
    exclude_seen: bool = Field(True, description="leave out items the user already rated")


class RecommendationOutput(BaseModel):
    user_id: str
    items: list[dict[str, Any]] | None = None
    item_id: str | None = None
    rating: float | None = None
    cold_start: bool = False


class RecommendationTask(RecommendationOptimizing, TaskBase):
    name = "recommendation"

    def __init__(self, config: AppConfig):
        super().__init__(config)
        self.opts: RecommendationOptions = model_options(config)
        self.users: np.ndarray | None = None  # (n_users, d) user tower
        self.items: np.ndarray | None = None
        self.ub: np.ndarray | None = None
        self.ib: np.ndarray | None = None
        self.meta: dict[str, Any] = {}
        self.seen: dict[int, np.ndarray] = {}
        self.user_index: dict[str, int] = {}
        self.towers: OnnxTowers | None = None  # an optimized run: the towers as an ONNX graph (onnx_recommendation)
        self.cold: np.ndarray | None = None  # its unknown users' item scores

    # data
    def read(self, path: str | None) -> pd.DataFrame:
        from luodi.data.readers import expand_path

        d = self.config.data
        src = path if path is not None else d.path
        if src is None:
            raise ConfigError(
                "'data.path' is missing: give a ratings file (user, item, rating), e.g. ml-100k/u.data"
            )
        p = expand_path(src)
        if not p.exists():
            raise ConfigError(
                f"'data.path': '{p}' not found (from '{src}'); set LUODI_DATASETS or fix the path"
            )
        df = read_ratings(p, dict(d.columns), d.format)
        if df.empty:
            raise ConfigError(f"'data.path': {p} holds no ratings")
        return df

    def split(self, data: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        spec = self.config.data.split
        spec.only(self.name, "valid", "seed")
        frac = float(0.2 if spec.valid is None else spec.valid)
        if not 0 < frac < 1:
            raise ConfigError(f"'data.split.valid' must be a fraction between 0 and 1 (got {frac})")
        rng = np.random.default_rng(spec.seed)
        mask = rng.random(len(data)) < frac
        return data[~mask].reset_index(drop=True), data[mask].reset_index(drop=True)

    # training
    def fit(self, train: pd.DataFrame, valid: pd.DataFrame | None, run_dir: Path, progress: bool = True) -> None:
        """Gibbs-sample BPMF on the training ratings (the validation ratings are not read)."""
        o = self.opts
        factors, iters, burn_in, thin = o.factors, o.iterations, o.burn_in, max(1, o.thin)
        if len(train) == 0:
            raise ConfigError("no training ratings: check data.path and data.split")
        user_ids = sorted(train["user"].unique())
        item_ids = sorted(train["item"].unique())
        uidx = {v: n for n, v in enumerate(user_ids)}
        iidx = {v: n for n, v in enumerate(item_ids)}
        u = train["user"].map(uidx).to_numpy()
        i = train["item"].map(iidx).to_numpy()
        mean = float(train["rating"].mean())
        r = train["rating"].to_numpy(float) - mean
        sampler = BPMF(len(user_ids), len(item_ids), factors, self.config.train.seed)
        ckpt = Path(run_dir) / CHECKPOINT_DIR
        if sampler.restore(ckpt) and progress:
            print(f"resuming BPMF from iteration {sampler.iteration} ({ckpt})")
        from threadpoolctl import threadpool_limits

        from luodi.tasks.grid_cnn import training_threads

        try:
            with threadpool_limits(training_threads()), Progress(disable=not progress, transient=True) as bar:
                job = bar.add_task("BPMF Gibbs sampling", total=iters, completed=sampler.iteration)
                while sampler.iteration < iters:
                    sampler.step(u, i, r)
                    if sampler.iteration > burn_in and (sampler.iteration - burn_in) % thin == 0:
                        sampler.kept_p.append(sampler.P.copy())
                        sampler.kept_q.append(sampler.Q.copy())
                    if sampler.iteration % 25 == 0:
                        sampler.save(ckpt)
                        train_rmse = float(np.sqrt(np.mean((r - sampler.predict_current(u, i)) ** 2)))
                        self.on_epoch_end(sampler.iteration, {"train_rmse": train_rmse})
                    bar.update(job, completed=sampler.iteration)
        except KeyboardInterrupt:
            sampler.save(ckpt)
            raise
        users, items, ub, ib = sampler.towers()
        self.users, self.items, self.ub, self.ib = users, items, ub, ib
        lo, hi = float(train["rating"].min()), float(train["rating"].max())
        counts = np.bincount(i, minlength=len(item_ids))
        self.meta = {
            "user_ids": user_ids,
            "item_ids": item_ids,
            "mean": mean,
            "min": lo,
            "max": hi,
            "item_counts": counts.tolist(),
            "factors": factors,
            "samples": len(sampler.kept_p),
            "popularity": o.popularity,
        }
        self.seen = {n: np.unique(i[u == n]) for n in range(len(user_ids))} if len(user_ids) < 200_000 else {}
        self._index()
        names_file = self.config.data.options.get("items")
        if names_file:
            from luodi.data.readers import expand_path

            p = expand_path(names_file)
            if not p.exists():
                raise ConfigError(f"'data.options.items': item names file {p} not found")
            names = read_item_names(p)
            self.meta["item_names"] = {k: names[k] for k in item_ids if k in names}

    def _index(self) -> None:
        self.user_index = {v: n for n, v in enumerate(self.meta["user_ids"])}
        self.item_index = {v: n for n, v in enumerate(self.meta["item_ids"])}

    def _need(self) -> None:
        if self.users is None and self.towers is None:
            raise NotFound("the recommender is not trained or loaded yet: call fit() or load(run_dir) first")

    # inference
    def rate(self, users: list[str], items: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Predicted ratings for (user, item) pairs, and whether both were known in training."""
        self._need()
        m = self.meta
        ui = np.array([self.user_index.get(x, -1) for x in users])
        ii = np.array([self.item_index.get(x, -1) for x in items])
        ku, ki = ui >= 0, ii >= 0
        if self.towers is not None:
            return np.clip(self.towers.rate(ui, ii), m["min"], m["max"]), ku & ki
        pred = np.full(len(ui), m["mean"], dtype=np.float64)
        pred[ku] += self.ub[ui[ku]]
        pred[ki] += self.ib[ii[ki]]
        both = ku & ki
        pred[both] += np.einsum("nd,nd->n", self.users[ui[both]], self.items[ii[both]])
        return np.clip(pred, m["min"], m["max"]), both

    def scores(self, user: str) -> tuple[np.ndarray, bool]:
        """Predicted rating of every item for `user` (item bias only for an unknown user)."""
        n = self.user_index.get(user)
        if self.towers is not None:
            if n is None:
                return self.cold, True
            return self.towers.scores(np.array([n]), np.arange(len(self.meta["item_ids"])))[0], False
        s = self.meta["mean"] + self.ib.astype(np.float64)
        if n is None:
            # cold start: well-rated items with enough ratings (shrink the bias by popularity)
            counts = np.asarray(self.meta["item_counts"], float)
            return self.meta["mean"] + self.ib * counts / (counts + 20.0), True
        return s + self.ub[n] + self.items @ self.users[n], False

    def top_k(self, user: str, k: int, exclude_seen: bool = True) -> tuple[list[int], np.ndarray, bool]:
        """The k best items for `user` and their predicted ratings. Items are ranked by predicted rating plus
        `popularity` x log(1 + ratings of the item): a rating says how much a user would like an item once
        seen, popularity how likely they are to pick it at all (on ml-100k this doubles NDCG@10)."""
        rating, cold = self.scores(user)
        s = rating.copy()
        if not cold:
            s += self.meta.get("popularity", 0.0) * np.log1p(np.asarray(self.meta["item_counts"], float))
        if exclude_seen and not cold:
            s[self.seen.get(self.user_index[user], np.array([], int))] = -np.inf
        k = min(k, int(np.isfinite(s).sum()))
        top = np.argpartition(-s, k - 1)[:k] if k < len(s) else np.arange(len(s))
        top = top[np.argsort(-s[top])]
        return top.tolist(), rating[top], cold

    def predict(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self._need()
        out = []
        for n, rec in enumerate(records):
            if not isinstance(rec, dict) or rec.get("user_id") is None:
                raise BadRequest(
                    f'input {n}: \'user_id\' is required, e.g. {{"user_id": "196", "k": 10}}', param="user_id"
                )
            user = str(rec["user_id"]).strip()
            if rec.get("item_id") is not None:
                item = str(rec["item_id"]).strip()
                pred, known = self.rate([user], [item])
                out.append(
                    {
                        "user_id": user,
                        "item_id": item,
                        "rating": round(float(pred[0]), 4),
                        "cold_start": not bool(known[0]),
                    }
                )
                continue
            k = rec.get("k", 10)
            if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 1000:
                raise BadRequest(f"input {n}: 'k' must be an integer from 1 to 1000 (got {k!r})", param="k")
            top, scores, cold = self.top_k(user, k, bool(rec.get("exclude_seen", True)))
            names = self.meta.get("item_names", {})
            items = []
            for j, s in zip(top, scores, strict=True):
                iid = self.meta["item_ids"][j]
                row = {
                    "item_id": iid,
                    "score": round(float(np.clip(s, self.meta["min"], self.meta["max"])), 4),
                }
                if iid in names:
                    row["name"] = names[iid]
                items.append(row)
            out.append({"user_id": user, "items": items, "cold_start": cold})
        return out

    def evaluate(self, data: pd.DataFrame, k: int = 10) -> dict[str, Any]:
        """RMSE/MAE of ratings; NDCG@k and recall@k of top-k lists (items not rated in training, relevant =
        held-out items rated >= 4) and NDCG@k of a most-popular baseline; share of known pairs."""
        self._need()
        pred, known = self.rate(data["user"].tolist(), data["item"].tolist())
        y = data["rating"].to_numpy(float)
        out: dict[str, Any] = {
            "rmse": float(np.sqrt(np.mean((pred - y) ** 2))),
            "mae": float(np.mean(np.abs(pred - y))),
            "known_pairs": float(known.mean()),
            "n": int(len(y)),
        }
        threshold = 4.0 if self.meta["max"] >= 4 else self.meta["max"]
        ranked, relevant, recalls, popular = [], [], [], []
        by_popularity = np.argsort(-np.asarray(self.meta["item_counts"]), kind="stable")
        for user, grp in data.groupby("user"):
            if user not in self.user_index:
                continue
            rel = {
                self.item_index[x]
                for x in grp.loc[grp["rating"] >= threshold, "item"]
                if x in self.item_index
            }
            if not rel:
                continue
            top, _, _ = self.top_k(user, k)
            ranked.append(top)
            relevant.append(rel)
            recalls.append(len(rel & set(top)) / min(k, len(rel)))
            seen = set(self.seen.get(self.user_index[user], np.array([], int)).tolist())
            popular.append([j for j in by_popularity[: k + len(seen)].tolist() if j not in seen][:k])
        out[f"ndcg@{k}"] = ndcg_at_k(ranked, relevant, k)
        out[f"baseline_popular_ndcg@{k}"] = ndcg_at_k(popular, relevant, k)
        out[f"recall@{k}"] = float(np.mean(recalls)) if recalls else 0.0
        out["report"] = {"y_true": y[:5000].tolist(), "y_pred": np.round(pred[:5000], 4).tolist()}
        return out

    # persistence
    def save(self, run_dir: Path) -> None:
        self._need()
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        seen_u = np.concatenate(
            [np.full(len(v), n, np.int32) for n, v in self.seen.items()] or [np.zeros(0, np.int32)]
        )
        seen_i = np.concatenate([v.astype(np.int32) for v in self.seen.values()] or [np.zeros(0, np.int32)])
        arrays = {"seen_user": seen_u, "seen_item": seen_i, "cold_scores": self.cold} if self.towers else {
            "users": self.users,
            "items": self.items,
            "user_bias": self.ub,
            "item_bias": self.ib,
            "seen_user": seen_u,
            "seen_item": seen_i,
        }
        with atomic_path(run_dir / WEIGHTS) as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp))
        write_json(run_dir / META, self.meta)

    def load(self, run_dir: Path) -> None:
        run_dir = Path(run_dir)
        if not (run_dir / WEIGHTS).exists() or not (run_dir / META).exists():
            raise NotFound(
                f"no trained recommender in {run_dir} ({WEIGHTS} or {META} missing); train the app first"
            )
        a = load(crypto.read_bytes(run_dir / WEIGHTS))
        self.meta = crypto.read_json(run_dir / META)
        if "runtime" in self.meta:  # an optimized run: the towers are an ONNX graph
            self.towers, self.cold = OnnxTowers(run_dir / self.meta["runtime"]["graph"]), a["cold_scores"]
            self.users = self.items = self.ub = self.ib = None
        else:
            self.users, self.items, self.ub, self.ib = a["users"], a["items"], a["user_bias"], a["item_bias"]
        su, si = a["seen_user"], a["seen_item"]
        order = np.argsort(su, kind="stable")
        su, si = su[order], si[order]
        bounds = np.searchsorted(su, np.arange(len(self.meta["user_ids"]) + 1))
        self.seen = {n: si[bounds[n] : bounds[n + 1]] for n in range(len(self.meta["user_ids"]))}
        self._index()

    def input_model(self) -> type[BaseModel]:
        return RecommendationInput

    def output_model(self) -> type[BaseModel]:
        return RecommendationOutput
