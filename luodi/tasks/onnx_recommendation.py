"""`luodi optimize --method onnx` for recommendation (a mixin of RecommendationTask).

BPMF is sampled by Gibbs sampling, not trained by gradients, but what it serves is a two-tower model: the
posterior mean as user and item matrices plus biases. The graph holds those towers and scores every given
user against every given item: `user` (N,) and `item` (M,) int64 indices, -1 for one not seen in training, to
the predicted ratings `scores` (N, M) float64: mean + user bias + item bias + p_u·q_i, each term only where its
side is known, as the numpy model computes them (the dot products in float32, the sum in float64). A top-k
request feeds one user and all items (one matrix-vector product); pair ratings are grouped by user, one call per
user with that user's items. What stays outside in numpy: the id -> index maps, clipping to the rating range,
the ranking itself (the popularity bonus, leaving out items the user rated, argpartition over all items) and the
cold-start list of an unknown user, stored as a precomputed vector (`cold_scores`: mean + item bias shrunk by the
item's rating count). The file with the towers is rewritten to keep only those numpy parts.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from luodi import crypto
from luodi.atomic import atomic_path
from luodi.errors import ConfigError
from luodi.ort import SizedSession

GRAPH = "recommender.onnx"
OUTPUT = "scores"


def cold_scores(mean: float, item_bias: np.ndarray, counts: list[int]) -> np.ndarray:
    """An unknown user's item scores: the item bias shrunk towards 0 for items with few ratings."""
    c = np.asarray(counts, float)
    return mean + item_bias * c / (c + 20.0)


def export_towers(users: np.ndarray, items: np.ndarray, ub: np.ndarray, ib: np.ndarray, mean: float,
                  path: Path) -> None:
    """The towers and the ratings of users x items as one graph at `path` (dynamic user and item axes)."""
    import torch

    class Towers(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for name, a in (("p", users), ("q", items), ("ub", ub), ("ib", ib)):
                self.register_buffer(name, torch.from_numpy(np.ascontiguousarray(a, np.float32)))
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float64))

        def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
            ku, ki = (user >= 0)[:, None], (item >= 0)[None, :]
            u, i = user.clamp(min=0), item.clamp(min=0)
            zero = torch.zeros(1, 1, dtype=torch.float64)
            dot = (self.p[u] @ self.q[i].T).double()
            return (self.mean + torch.where(ku, self.ub[u].double()[:, None], zero)
                    + torch.where(ki, self.ib[i].double()[None, :], zero) + torch.where(ku & ki, dot, zero))

    sample = (torch.tensor([0, -1]), torch.tensor([0, 1, -1]))
    axes = {"user": {0: "users"}, "item": {0: "items"}, OUTPUT: {0: "users", 1: "items"}}
    with atomic_path(Path(path), suffix=".onnx") as tmp, torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shape checks that the dynamic batch axis makes general
        torch.onnx.export(Towers().eval(), sample, str(tmp), input_names=["user", "item"], output_names=[OUTPUT],
                          dynamic_axes=axes, opset_version=17, dynamo=False)


class OnnxTowers:
    """The pair scorer of an optimized run, by ONNX Runtime."""

    def __init__(self, path: Path, threads: int | None = None):
        self.path = Path(path)
        self.session = SizedSession(self.path, threads)

    def scores(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(len(users), len(items)) predicted ratings (indices; -1: unknown)."""
        feed = {"user": np.asarray(users, np.int64), "item": np.asarray(items, np.int64)}
        return self.session.run([OUTPUT], feed)[0]

    def rate(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The predicted rating of each (user, item) pair: one call per distinct user."""
        users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
        out = np.zeros(len(users))
        for u in np.unique(users):
            rows = np.flatnonzero(users == u)
            out[rows] = self.scores(np.array([u]), items[rows])[0]
        return out


class RecommendationOptimizing:
    """records_of / parameter_count / optimize of RecommendationTask (its state is declared there)."""

    optimize_methods: ClassVar[tuple[str, ...]] = ("onnx",)
    config: Any
    meta: dict[str, Any]
    users: np.ndarray | None
    items: np.ndarray | None
    ub: np.ndarray | None
    ib: np.ndarray | None
    towers: OnnxTowers | None
    cold: np.ndarray | None
    seen: dict[int, np.ndarray]
    _need: Callable[[], None]
    save: Callable[[Path], None]

    def records_of(self, data: pd.DataFrame) -> list[dict[str, Any]]:
        """The prediction requests of held-out ratings: the top 10 for each of their users, in order of appearance."""
        return [{"user_id": str(u), "k": 10} for u in pd.unique(data["user"])]

    def parameter_count(self) -> int:
        """The towers' numbers (the graph's initializers, when ONNX)."""
        from luodi.ort import parameter_count

        self._need()
        if self.towers is not None:
            return parameter_count(self.towers.path)
        return int(sum(a.size for a in (self.users, self.items, self.ub, self.ib)))

    def optimize(
        self, method: str, run_dir: Path, score: Callable[[], float], calibration: pd.DataFrame, opts: Any,
        say: Callable[[str], None],
    ) -> dict[str, Any]:
        """Replace the towers of the run in run_dir (a copy of the base run) by the graph, checked against the
        numpy model on every (user, item) pair of the calibration users (agreement of the top-10 lists, max |rating
        difference|)."""
        self._need()
        kind = self.config.model.type or "bpmf"
        if kind != "bpmf":
            raise ConfigError(f"model.type {kind}: --method onnx is offered for model.type bpmf", param="model.type")
        if method not in self.optimize_methods:
            raise ConfigError(f"--method {method} is not offered for recommendation; offered: onnx", param="method")
        if self.towers is not None:
            raise ConfigError("this run already predicts with ONNX; optimize the run it was made from (--version)",
                              param="method")
        run_dir = Path(run_dir)
        users = [u for u in pd.unique(calibration["user"]) if u in self.user_index]
        n_items = len(self.meta["item_ids"])
        ui = np.array([self.user_index[u] for u in users], np.int64)
        ref_top = [self.top_k(u, 10)[0] for u in users]
        reference = np.concatenate([self.scores(u)[0] for u in users]) if users else np.zeros(0)
        self.meta["runtime"] = {"graph": GRAPH, "precision": "float32 towers, float64 sums"}
        export_towers(self.users, self.items, self.ub, self.ib, self.meta["mean"], run_dir / GRAPH)
        self.cold = cold_scores(self.meta["mean"], self.ib, self.meta["item_counts"])
        self.towers = OnnxTowers(run_dir / GRAPH, opts.threads)
        self.users = self.items = self.ub = self.ib = None
        self.save(run_dir)  # the towers file now keeps only the seen items and the cold-start scores
        got = self.towers.scores(ui, np.arange(n_items)).ravel() if users else np.zeros(0)
        c = {
            "users": len(users),
            "agreement": round(float(np.mean([self.top_k(u, 10)[0] == r for u, r in zip(users, ref_top,
                                                                                         strict=True)])), 5)
            if users else 1.0,
            "max_abs_diff": float(np.abs(reference - got).max()) if len(got) else 0.0,
        }
        say(f"exported the towers to ONNX ({GRAPH}): top-10 lists agree with numpy {c['agreement']:.4f}, max "
            f"|rating difference| {c['max_abs_diff']:.2e}; the ranking over all items stays in numpy")
        return {"graph_vs_numpy": c}

    def export_bundle(self, out: Path) -> dict[str, Any]:
        """Write a standalone bundle into `out`: recommender.onnx (the towers: ratings of users x items),
        preprocess.json (the id lists, rating range, item rating counts and popularity weight of the ranking, each
        known user's rated items, the cold-start scores, item names) and predict.py (onnxruntime and numpy)."""
        import shutil

        from luodi.atomic import write_json
        from luodi.tasks import bundles

        self._need()
        kind = self.config.model.type or "bpmf"
        if kind != "bpmf":
            raise ConfigError(f"model.type {kind}: bundles are built for model.type bpmf", param="model.type")
        out, m = Path(out), self.meta
        if self.towers is not None:  # (plaintext: a bundle runs without luodi)
            (out / GRAPH).write_bytes(crypto.read_bytes(self.towers.path))
            cold = self.cold
        else:
            export_towers(self.users, self.items, self.ub, self.ib, m["mean"], out / GRAPH)
            cold = cold_scores(m["mean"], self.ib, m["item_counts"])
        write_json(out / "preprocess.json", {
            **{k: m[k] for k in ("user_ids", "item_ids", "min", "max", "item_counts")},
            "popularity": m.get("popularity", 0.0), "cold_scores": np.asarray(cold, np.float64).tolist(),
            "seen": [self.seen.get(n, np.zeros(0, int)).tolist() for n in range(len(m["user_ids"]))],
            "item_names": m.get("item_names", {}),
        })
        shutil.copy2(Path(bundles.__file__).parent / "recommendation_predict.py", out / "predict.py")
        return {
            "inputs": 'one JSON request per line on stdin (or per argument): {"user_id": "196", "k": 10, '
            '"exclude_seen": true} for the top k items, {"user_id": "196", "item_id": "242"} for one rating',
            "outputs": "one JSON line per request, as luodi answers: {user_id, items: [{item_id, score, name?}], "
            "cold_start} or {user_id, item_id, rating, cold_start}",
            "labels": len(m["item_ids"]),
            "requires": "onnxruntime numpy",
            "contents": f"{GRAPH} (the user and item towers), preprocess.json (ids, rating range, popularity, rated "
            "items, cold-start scores, item names), predict.py",
            "example": 'echo \'{"user_id": "196", "k": 5}\' | python predict.py',
        }
