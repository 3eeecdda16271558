"""How each member of the tabular ensemble is fitted: LightGBM boosters (checkpointed every epoch's share of
rounds, resumed, early-stopped on the validation rows), the MLP (on the shared luodi.train.torch_loop), the
linear model and the scikit-learn forest / SVM (sklearn_members.py). `MemberFitting` is a mixin of TabularTask:
it reads the task's options, preprocessing and objective, and sets the fitted member on it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from luodi import atomic, crypto
from luodi.config import AppConfig
from luodi.data.tabular import Preprocessor
from luodi.options.tabular import LIGHTGBM_PARAMS, TabularOptions
from luodi.tasks.tabular.sklearn_members import OnnxMember, fit_onnx
from luodi.tasks.tabular.torch_state import make_mlp, tensor_batches


class MemberFitting:
    """Fits members on TabularTask's state (declared here for the reader; TabularTask sets it)."""

    config: AppConfig
    opts: TabularOptions
    prep: Preprocessor
    objective: str
    classes: list[str]
    history: list[dict[str, Any]]
    callbacks: list[Any]
    booster: Any
    more_boosters: list[Any]
    mlp: Any
    linear: dict[str, Any] | None
    sk: dict[str, OnnxMember]

    def _fit_linear(self, train: pd.DataFrame, y: np.ndarray, sw: np.ndarray | None) -> None:
        """L2 logistic regression (ridge for regression) on the standardized + one-hot matrix."""
        from sklearn.linear_model import LogisticRegression, Ridge

        x = self._dense(train, "linear").astype(np.float64)
        c = self.opts.linear_C
        if self.objective == "regression":
            m = Ridge(alpha=1.0 / c).fit(x, y, sample_weight=sw)
            coef, icpt = np.atleast_2d(m.coef_), np.atleast_1d(m.intercept_)
        else:
            m = LogisticRegression(C=c, max_iter=5000).fit(x, y, sample_weight=sw)
            coef, icpt = m.coef_, m.intercept_
        self.linear = {"coef": coef.tolist(), "intercept": icpt.tolist()}

    def _fit_sklearn(self, kind: str, train: pd.DataFrame, y: np.ndarray, sw: np.ndarray | None, bar) -> None:
        task = bar.add_task(kind, total=1, info="")
        x = self._dense(train, kind)
        blob = fit_onnx(kind, x, y, sw, self.objective == "regression", self.opts, self.config.train.seed)
        self.sk[kind] = OnnxMember(blob, self.opts.threads)
        bar.update(task, completed=1)

    def _linear_out(self, x: np.ndarray) -> np.ndarray:
        """The linear model's probabilities (prediction for regression) from its matrix."""
        x = x.astype(np.float64)
        z = x @ np.asarray(self.linear["coef"]).T + np.asarray(self.linear["intercept"])
        if self.objective == "regression":
            return z[:, :1]
        if self.objective == "binary":
            p = 1.0 / (1.0 + np.exp(-z[:, 0]))
            return np.stack([1 - p, p], 1)
        z = z - z.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)

    def _lgb_params(self) -> dict[str, Any]:
        o, tc = self.opts, self.config.train
        p: dict[str, Any] = {k: getattr(o, k) for k in LIGHTGBM_PARAMS}
        p.update(
            learning_rate=tc.lr,
            seed=tc.seed,
            verbosity=-1,
            num_threads=o.threads,
            deterministic=True,
            force_col_wise=True,
        )
        if self.objective == "binary":
            p.update(objective="binary", metric="binary_logloss")
        elif self.objective == "multiclass":
            p.update(objective="multiclass", num_class=len(self.classes), metric="multi_logloss")
        else:
            p.update(objective="regression", metric="l2")
        return p

    def _fit_lgb(self, train, y, sw, valid, y_va, ckpt: Path, bar) -> None:
        import lightgbm as lgb

        prep = self.prep
        n_cat = len(prep.categorical)
        cat_idx = list(range(len(prep.numeric), len(prep.numeric) + n_cat))
        dtr = lgb.Dataset(
            prep.lgb_matrix(train), y, weight=sw, categorical_feature=cat_idx or "auto", free_raw_data=False
        )
        dva = lgb.Dataset(prep.lgb_matrix(valid), y_va, reference=dtr, categorical_feature=cat_idx or "auto")
        n = self.opts.seeds
        boosters = [self._fit_one_lgb(i, n, dtr, dva, ckpt, bar) for i in range(n)]
        self.booster, self.more_boosters = boosters[0], boosters[1:]

    def _fit_one_lgb(self, i: int, n: int, dtr, dva, ckpt: Path, bar):
        """Booster i of n (seeds differ per booster); checkpointed, resumed, early-stopped on valid."""
        import lightgbm as lgb

        total = self.opts.n_estimators
        epochs = self.config.train.epochs
        per_epoch = max(1, math.ceil(total / epochs))
        suffix = f"_{i}" if i else ""
        state_p, model_p = ckpt / f"lgb{suffix}_state.json", ckpt / f"lgb{suffix}.txt"
        state = crypto.read_json(state_p) if state_p.exists() and model_p.exists() else {}
        if state.get("done"):
            if i == 0:
                self.history += state.get("history", [])
            return lgb.Booster(model_str=crypto.read_text(model_p))
        init = lgb.Booster(model_str=crypto.read_text(model_p)) if state else None
        start = int(state.get("iteration", 0))
        if i == 0:
            self.history += state.get("history", [])
        name = "boosting" if n == 1 else f"boosting {i + 1}/{n}"
        task = bar.add_task(name, total=total, completed=start, info="")
        es = self.opts.early_stopping_rounds if self.config.train.early_stopping else None
        evals: dict[str, Any] = {}

        def checkpoint(env) -> None:
            it = env.iteration + 1
            bar.update(task, completed=it)
            if it % per_epoch and it != env.end_iteration:
                return
            vals = {f"{name}_{m}": float(v) for name, m, v, *_ in env.evaluation_result_list}
            bar.update(task, info=" ".join(f"{k}={v:.4f}" for k, v in vals.items()))
            atomic.write_bytes(model_p, env.model.model_to_string().encode())
            logs = {**vals, "stage": "lightgbm", "iteration": it}
            hist = self.history + [{"epoch": it // per_epoch, **logs}] if i == 0 else []
            atomic.write_json(state_p, {"iteration": it, "history": hist})
            if i == 0:
                self.on_epoch_end(math.ceil(it / per_epoch), logs)

        callbacks = [checkpoint, lgb.record_evaluation(evals)]
        if es:
            callbacks.append(lgb.early_stopping(int(es), first_metric_only=True, verbose=False))
        params = self._lgb_params()
        if i:  # same data binning, different row/feature sampling
            seed = self.config.train.seed + 1000 * i
            params.update(bagging_seed=seed, feature_fraction_seed=seed, extra_seed=seed)
        booster = lgb.train(
            params,
            dtr,
            num_boost_round=max(0, total - start),
            valid_sets=[dtr, dva],
            valid_names=["train", "valid"],
            init_model=init,
            callbacks=callbacks,
            keep_training_booster=True,
        )
        best = booster.best_iteration or booster.current_iteration()
        out = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
        atomic.write_bytes(model_p, out.model_to_string().encode())
        atomic.write_json(
            state_p, {"done": True, "iteration": best, "history": self.history if i == 0 else []}
        )
        bar.update(task, completed=total)
        return out

    def _fit_mlp(self, train, y, sw, valid, y_va, ckpt: Path, progress: bool, epoch_offset: int = 0) -> None:
        """The MLP on the shared torch loop (early stopping on the validation loss, checkpoints, resume)."""
        import torch

        from luodi.train.torch_loop import LoopConfig, train_loop

        tc, o = self.config.train, self.opts
        torch.manual_seed(tc.seed)
        xtr = torch.from_numpy(self._dense(train, "mlp"))
        xva = torch.from_numpy(self._dense(valid, "mlp"))
        reg = self.objective == "regression"
        if reg:
            self._ymean, self._ystd = float(np.mean(y)), float(np.std(y) or 1.0)
            ytr = torch.from_numpy(((y - self._ymean) / self._ystd).astype(np.float32))
            yva = torch.from_numpy(((y_va - self._ymean) / self._ystd).astype(np.float32))
        else:
            ytr, yva = torch.from_numpy(np.array(y)), torch.from_numpy(np.array(y_va))
        wtr = torch.from_numpy(sw) if sw is not None else torch.ones(len(y))
        n_out = 1 if reg else len(self.classes)
        self.mlp = make_mlp(xtr.shape[1], n_out, list(o.hidden), o.dropout)

        def loss_fn(out, target, w):
            if reg:
                return (w * (out.squeeze(1) - target) ** 2).sum() / w.sum()
            return (w * torch.nn.functional.cross_entropy(out, target, reduction="none")).sum() / w.sum()

        def on_epoch(epoch: int, logs: dict[str, float]) -> None:
            for cb in self.callbacks:
                cb(epoch_offset + epoch, {**logs, "stage": "mlp"})

        cfg = LoopConfig.from_train(
            tc,
            lr=o.mlp_lr or tc.lr,
            weight_decay=o.weight_decay,
            schedule="constant",
            monitor="valid_loss",
            threads=o.threads,
        )
        res = train_loop(
            self.mlp,
            tensor_batches(xtr, ytr, wtr, batch_size=tc.batch_size),
            lambda model, b: loss_fn(model(b[0]), b[1], b[2]),
            lambda model: {"valid_loss": float(loss_fn(model(xva), yva, torch.ones(len(yva))))},
            ckpt / "mlp",
            cfg,
            progress=progress,
            on_epoch=on_epoch,
        )
        self.history += [
            {**h, "epoch": epoch_offset + int(h["epoch"]), "stage": "mlp"} for h in res.history
        ]
        self.mlp.eval()
