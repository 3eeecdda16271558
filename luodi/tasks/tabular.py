"""Tabular classification / regression: LightGBM, an MLP, a linear model, a random forest, an RBF SVM, or a
weighted average of them; calibrated probabilities.

model.type: lightgbm (default) | mlp | linear | forest | svm | ensemble. `ensemble_weights` maps members to
weights, e.g. `{lightgbm: 1, linear: 1, forest: 1, svm: 1}` (a list is read as [lightgbm, mlp, linear];
default for ensemble: lightgbm and mlp, equal). `linear` is L2-regularized logistic regression (ridge for
regression, strength 1/linear_C) on the standardized + one-hot matrix; `forest` and `svm` are scikit-learn
models on the same matrix, stored as ONNX (see tabular_sklearn.py). `ordinal: {column: [values in
order]}` turns ordered categories into one numeric rank column (unknown values -> missing), which
LightGBM splits monotonically and the MLP / linear model see as one slope instead of one-hots. `coding:
{members: [linear], ordinal: {...}, indicators: {column: [values]}}` gives the members named their own,
compact coding (more ranks; indicators for a few values only): see luodi/data/coding.py.
`inner_folds: k` (k >= 2) cross-fits: k members, each trained on k-1 folds of the training rows and
early-stopped on the remaining fold; predictions average the members and the calibrator is fitted on the
out-of-fold predictions of every training row. Every training row is used and the validation split is
never touched during fit, so its score is an honest estimate (with k = 0, early stopping and calibration
use the validation split). Members are saved under run_dir/member<j>/.
Weights: LightGBM text format, MLP safetensors, forest / SVM ONNX, linear coefficients, preprocessing and
calibration as JSON. Training checkpoints every epoch (the MLP on the shared luodi.train.torch_loop; LightGBM: every
n_estimators/epochs rounds) under run_dir/checkpoint and resumes from there.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, create_model

from luodi import atomic
from luodi.config import AppConfig
from luodi.data.balance import resample, sample_weights
from luodi.data.coding import Coding, check_ordinal, rank_columns
from luodi.data.readers import read_app_table
from luodi.data.split import kfold_indices, split_frame
from luodi.data.tabular import Columns, Preprocessor, py_name
from luodi.errors import BadRequest, ConfigError
from luodi.evaluate.calibration import apply_calibrator, fit_calibrator
from luodi.evaluate.metrics import classification_report_data, regression_metrics
from luodi.apps.registry import CHECKPOINT_DIR
from luodi.tasks.base import TableInputs, TaskBase
from luodi.tasks.tabular_sklearn import SKLEARN_MEMBERS, SKLEARN_OPTIONS, OnnxMember, check_options, fit_onnx

MEMBERS = ("lightgbm", "mlp", "linear", *SKLEARN_MEMBERS)
MODEL_TYPES = (*MEMBERS, "ensemble")
LGB_OPTIONS = {
    "n_estimators": 500,
    "num_leaves": 31,
    "min_child_samples": 20,
    "feature_fraction": 0.9,
    "bagging_fraction": 1.0,
    "bagging_freq": 0,
    "lambda_l1": 0.0,
    "lambda_l2": 0.0,
    "max_depth": -1,
    "min_split_gain": 0.0,
    "cat_smooth": 10.0,
    "early_stopping_rounds": 50,
    "seeds": 1,  # >1: that many boosters with different bagging/feature-sampling seeds, averaged
}
MLP_OPTIONS = {"hidden": [128, 64], "dropout": 0.1, "weight_decay": 1e-4}
OTHER_OPTIONS = {
    "calibration": "sigmoid",
    "objective": "auto",
    "ensemble_weights": None,
    "mlp_lr": None,
    "linear_C": 1.0,
    "ordinal": None,
    "coding": None,  # a compact coding for some members (luodi/data/coding.py)
    "threads": 1,  # OpenMP threads; >1 is much slower on a busy 2-core machine (spin-waiting)
    "inner_folds": 0,  # >=2: cross-fitted members; the validation split is only scored (see module doc)
}


def resolve_options(cfg: AppConfig) -> dict[str, Any]:
    """model.options merged over defaults; unknown options are rejected with their path."""
    allowed = {**LGB_OPTIONS, **MLP_OPTIONS, **SKLEARN_OPTIONS, **OTHER_OPTIONS}
    for k in cfg.model.options:
        if k not in allowed:
            raise ConfigError(
                f"unknown key 'model.options.{k}' for task {cfg.task}; "
                f"expected one of {', '.join(sorted(allowed))}"
            )
    opts = {**allowed, **cfg.model.options}
    if opts["calibration"] not in ("sigmoid", "isotonic", "none"):
        raise ConfigError(
            f"'model.options.calibration' must be sigmoid, isotonic or none (got {opts['calibration']!r})"
        )
    if opts["objective"] not in ("auto", "binary", "multiclass", "regression"):
        raise ConfigError(
            "'model.options.objective' must be auto, binary, multiclass or regression "
            f"(got {opts['objective']!r})"
        )
    Coding.from_options(opts["coding"], check_ordinal(opts["ordinal"], "model.options.ordinal"))
    try:
        ok = float(opts["linear_C"]) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"'model.options.linear_C' must be a positive number (got {opts['linear_C']!r})")
    k = opts["inner_folds"]
    if not (isinstance(k, int) and not isinstance(k, bool) and (k == 0 or k >= 2)):
        raise ConfigError(f"'model.options.inner_folds' must be 0 (off) or an integer >= 2 (got {k!r})")
    check_options(opts)
    return opts


# ---- safetensors weights of torch modules (training checkpoints: luodi.train.torch_loop) -----------------


def save_torch_state(path: Path, modules: dict[str, Any]) -> None:
    """Modules' state dicts in one safetensors file, keys prefixed with the module's name."""
    from safetensors.torch import save

    tensors = {
        f"{name}.{k}": v.detach().contiguous().clone()
        for name, m in modules.items()
        for k, v in m.state_dict().items()
    }
    atomic.write_bytes(path, save(tensors))


def load_torch_state(path: Path) -> dict[str, dict[str, Any]]:
    """{module name: state_dict} from a file written by save_torch_state."""
    from safetensors import safe_open

    mods: dict[str, dict[str, Any]] = {}
    with safe_open(str(path), "pt") as f:
        for key in f.keys():
            head, rest = key.split(".", 1)
            mods.setdefault(head, {})[rest] = f.get_tensor(key)
    return mods


def tensor_batches(*tensors: Any, batch_size: int):
    """Shuffled mini-batches of row-aligned tensors (a DataLoader; the shuffle follows torch's seed)."""
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

    data = TensorDataset(*tensors)
    batches = BatchSampler(RandomSampler(data), batch_size, drop_last=False)
    return DataLoader(data, sampler=batches, batch_size=None)


def make_mlp(n_in: int, n_out: int, hidden: list[int], dropout: float):
    import torch.nn as nn

    layers: list[Any] = []
    d = n_in
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU(), nn.Dropout(dropout)]
        d = h
    layers.append(nn.Linear(d, n_out))
    return nn.Sequential(*layers)


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )


class TabularTask(TableInputs, TaskBase):
    name: ClassVar[str] = "tabular"

    def __init__(self, config: AppConfig):
        super().__init__(config)
        self.cols = Columns.from_config(config.data.columns, need_label=True)
        self.opts = resolve_options(config)
        self.kind = config.model.type or "lightgbm"
        if self.kind not in MODEL_TYPES:
            raise ConfigError(
                f"'model.type' for tabular must be one of {', '.join(MODEL_TYPES)} (got {self.kind!r})"
            )
        self.prep: Preprocessor | None = None
        self.classes: list[str] = []
        self.positive = 1
        self.objective = "binary"
        self.booster = None
        self.more_boosters: list[Any] = []  # seeds 2..n of model.options.seeds
        self.mlp = None
        self.linear: dict[str, Any] | None = None
        self.sk: dict[str, OnnxMember] = {}  # forest / svm members
        self.ordinal = check_ordinal(self.opts["ordinal"], "model.options.ordinal")
        self.coding = Coding.from_options(self.opts["coding"], self.ordinal)
        self.coded_prep: Preprocessor | None = None  # the coding members' preprocessor
        self.calibrator: dict[str, Any] | None = None
        self.weights = self._ensemble_weights()
        self.members: list[TabularTask] = []  # cross-fitted members (model.options.inner_folds)

    # ---- data -----------------------------------------------------------------------------------------
    def read(self, path: str | None) -> pd.DataFrame:
        d = self.config.data
        field = "data.path" if path is None else "data"
        df = read_app_table(
            path if path is not None else d.path, d.format, d.options, self.cols.names, self.cols.label, field
        )
        if self.cols.label and self.cols.label in df.columns:
            df[self.cols.label] = (
                self.cols.map_labels(df[self.cols.label])
                if not self._is_regression_raw(df)
                else pd.to_numeric(df[self.cols.label], errors="coerce")
            )
        return df

    def _is_regression_raw(self, df: pd.DataFrame) -> bool:
        if self.opts["objective"] == "regression":
            return True
        if self.opts["objective"] != "auto" or self.cols.label_map:
            return False
        y = df[self.cols.label]
        return pd.api.types.is_float_dtype(y) and y.nunique() > 20

    def labels(self, data: pd.DataFrame) -> Any:
        return None if self.objective == "regression" else data[self.cols.label].astype(str).to_numpy()

    def split(self, data: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        return split_frame(data, dict(self.config.data.split), self.cols.label)

    def _target(self, df: pd.DataFrame) -> np.ndarray:
        lab = self.cols.label
        if lab not in df.columns:
            raise BadRequest(f"the data has no label column '{lab}' (data.columns.label)", param=lab)
        if self.objective == "regression":
            return pd.to_numeric(df[lab], errors="coerce").to_numpy(np.float64)
        idx = {c: i for i, c in enumerate(self.classes)}
        vals = df[lab].astype(str)
        unknown = sorted(set(vals) - set(idx))
        if unknown:
            raise BadRequest(
                f"label column '{lab}' has values {unknown[:5]} not seen in training "
                f"(known: {self.classes}); map them with data.columns.label_map",
                param=lab,
            )
        return vals.map(idx).to_numpy(np.int64)

    # ---- training -------------------------------------------------------------------------------------
    def _setup(self, train: pd.DataFrame) -> None:
        lab = self.cols.label
        if lab not in train.columns:
            raise ConfigError(
                f"'data.columns.label': column '{lab}' not in the data; "
                f"columns are: {', '.join(map(str, train.columns))}"
            )
        self.prep = Preprocessor.fit(train, self.cols)
        if self.coding is not None:
            cols = [*self.coding.ordinal, *self.coding.indicators]
            unknown = [c for c in cols if c not in self.prep.features]
            if unknown:
                raise ConfigError(
                    f"'model.options.coding': column '{unknown[0]}' is not a feature; "
                    f"features are: {', '.join(self.prep.features)}"
                )
            coded = Columns(
                label=lab,
                features=self.coding.features(self.prep.features),
                categorical=[c for c in self.prep.categorical if c not in cols],
            )
            self.coded_prep = Preprocessor.fit(self.coding.recode(train), coded)
        if self._is_regression_raw(train):
            self.objective, self.classes = "regression", []
            return
        counts = train[lab].astype(str).value_counts()
        self.classes = sorted(counts.index)
        if len(self.classes) < 2:
            raise ConfigError(f"label column '{lab}' has a single class {self.classes}: nothing to learn")
        self.objective = "binary" if len(self.classes) == 2 else "multiclass"
        if self.opts["objective"] in ("binary", "multiclass") and self.opts["objective"] != self.objective:
            raise ConfigError(
                f"'model.options.objective' is {self.opts['objective']} but the label has "
                f"{len(self.classes)} classes"
            )
        pos = self.cols.positive if self.cols.positive is not None else counts.index[-1]  # default: minority
        if str(pos) not in self.classes:
            raise ConfigError(f"'data.columns.positive' {pos!r} is not a label value; labels: {self.classes}")
        self.positive = self.classes.index(str(pos))

    def _ensemble_weights(self) -> dict[str, float]:
        """Normalized weight per member (MEMBERS order); members with weight 0 are not trained."""
        w = self.opts["ensemble_weights"]
        if w is None:
            w = {self.kind: 1.0} if self.kind in MEMBERS else {"lightgbm": 1.0, "mlp": 1.0}
        elif isinstance(w, list) and len(w) in (2, 3):
            w = dict(zip(("lightgbm", "mlp", "linear"), w, strict=False))
        ok = (
            isinstance(w, dict)
            and set(w) <= set(MEMBERS)
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0 for x in w.values())
            and sum(w.values()) > 0
        )
        if not ok:
            raise ConfigError(
                "'model.options.ensemble_weights' must map members to non-negative weights, e.g. "
                f"{{lightgbm: 1, linear: 1, forest: 1, svm: 1}} (members: {', '.join(MEMBERS)}; a list "
                f"[lightgbm, mlp, linear] also works), got {w!r}"
            )
        total = float(sum(w.values()))
        return {m: float(w.get(m, 0.0)) / total for m in MEMBERS}

    def _encode_ordinal(self, df: pd.DataFrame) -> pd.DataFrame:
        """Ordered categorical columns (model.options.ordinal) -> their rank; unknown values -> NaN."""
        return rank_columns(df, self.ordinal, "model.options.ordinal")

    def _dense(self, df: pd.DataFrame, member: str) -> np.ndarray:
        """The standardized + one-hot matrix `member` reads: its own compact coding, or the shared one."""
        if self.coded_prep is not None and member in self.coding.members:
            return self.coded_prep.dense_matrix(self.coding.recode(df))
        return self.prep.dense_matrix(df)

    def refit_blocker(self) -> str | None:
        if self.opts["inner_folds"]:
            return None  # members early-stop on inner folds and calibrate out of fold: validation only reports
        return "with model.options.inner_folds 0 the model early-stops and calibrates on the validation rows"

    def fit(
        self, train: pd.DataFrame, valid: pd.DataFrame, run_dir: Path, progress: bool = True
    ) -> dict[str, float]:
        ckpt = Path(run_dir) / CHECKPOINT_DIR
        ckpt.mkdir(parents=True, exist_ok=True)
        raw_train, raw_valid = train, valid
        train, valid = self._encode_ordinal(train), self._encode_ordinal(valid)
        self._setup(train)
        y_tr, y_va = self._target(train), self._target(valid)
        if self.opts["inner_folds"]:
            return self._fit_crossfit(raw_train, raw_valid, ckpt, progress)
        tc = self.config.train
        rows = (
            np.arange(len(train)) if self.objective == "regression" else resample(y_tr, tc.resample, tc.seed)
        )
        sw = None if self.objective == "regression" else sample_weights(y_tr[rows], tc.class_weights)
        epochs_done = 0
        with _progress(progress) as bar:
            if self.weights["lightgbm"] > 0:
                self._fit_lgb(train.iloc[rows], y_tr[rows], sw, valid, y_va, ckpt, bar)
                epochs_done = tc.epochs
            if self.weights["mlp"] > 0:
                self._fit_mlp(
                    train.iloc[rows], y_tr[rows], sw, valid, y_va, ckpt, progress, epoch_offset=epochs_done
                )
            if self.weights["linear"] > 0:
                self._fit_linear(train.iloc[rows], y_tr[rows], sw)
            for kind in SKLEARN_MEMBERS:
                if self.weights[kind] > 0:
                    self._fit_sklearn(kind, train.iloc[rows], y_tr[rows], sw, bar)
        if self.objective == "binary":
            raw = self._raw_proba(raw_valid)[:, self.positive]
            self.calibrator = fit_calibrator(
                raw, (y_va == self.positive).astype(int), self.opts["calibration"]
            )
        return {k: v for k, v in self.evaluate(raw_valid).items() if isinstance(v, float)}

    def _member_config(self) -> AppConfig:
        """The app config of one cross-fitted member: same model, no inner folds, no calibration."""
        model = self.config.model.model_copy(
            update={"options": {**self.config.model.options, "inner_folds": 0, "calibration": "none"}}
        )
        return self.config.model_copy(update={"model": model})

    def _fit_crossfit(
        self, train: pd.DataFrame, valid: pd.DataFrame, ckpt: Path, progress: bool
    ) -> dict[str, float]:
        """k members on k-1 folds each (early stopping on the k-th); calibrator on out-of-fold predictions."""
        k, seed = int(self.opts["inner_folds"]), self.config.train.seed
        cfg = self._member_config()
        oof = np.zeros(len(train))
        self.members, self.history = [], []
        for j, (tr_idx, va_idx) in enumerate(kfold_indices(len(train), k, seed, self.labels(train))):
            member = TabularTask(cfg)

            def relay(epoch: int, logs: dict[str, Any], j: int = j) -> None:
                for cb in self.callbacks:
                    cb(epoch, {**logs, "member": j})

            member.callbacks = [relay]
            va = train.iloc[va_idx].reset_index(drop=True)
            member.fit(train.iloc[tr_idx].reset_index(drop=True), va, ckpt / f"member{j}", progress=progress)
            if member.objective != self.objective or member.classes != self.classes:
                raise ConfigError(
                    f"inner fold {j} lacks a class of {self.classes}: lower 'model.options.inner_folds'"
                )
            if self.objective == "binary":
                oof[va_idx] = member._raw_proba(va)[:, self.positive]
            self.history += [{**h, "member": j} for h in member.history]
            self.members.append(member)
        if self.objective == "binary":
            y = (self._target(train) == self.positive).astype(int)
            self.calibrator = fit_calibrator(oof, y, self.opts["calibration"])
        return {k: v for k, v in self.evaluate(valid).items() if isinstance(v, float)}

    def _fit_linear(self, train: pd.DataFrame, y: np.ndarray, sw: np.ndarray | None) -> None:
        """L2 logistic regression (ridge for regression) on the standardized + one-hot matrix."""
        from sklearn.linear_model import LogisticRegression, Ridge

        x = self._dense(train, "linear").astype(np.float64)
        c = float(self.opts["linear_C"])
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
        self.sk[kind] = OnnxMember(blob, int(self.opts["threads"]))
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
        p = {k: o[k] for k in LGB_OPTIONS if k not in ("n_estimators", "early_stopping_rounds", "seeds")}
        p.update(
            learning_rate=tc.lr,
            seed=tc.seed,
            verbosity=-1,
            num_threads=int(o["threads"]),
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
        n = int(self.opts["seeds"])
        if n < 1:
            raise ConfigError(
                f"'model.options.seeds' must be a positive integer (got {self.opts['seeds']!r})"
            )
        boosters = [self._fit_one_lgb(i, n, dtr, dva, ckpt, bar) for i in range(n)]
        self.booster, self.more_boosters = boosters[0], boosters[1:]

    def _fit_one_lgb(self, i: int, n: int, dtr, dva, ckpt: Path, bar):
        """Booster i of n (seeds differ per booster); checkpointed, resumed, early-stopped on valid."""
        import lightgbm as lgb

        total = int(self.opts["n_estimators"])
        epochs = self.config.train.epochs
        per_epoch = max(1, math.ceil(total / epochs))
        suffix = f"_{i}" if i else ""
        state_p, model_p = ckpt / f"lgb{suffix}_state.json", ckpt / f"lgb{suffix}.txt"
        state = json.loads(state_p.read_text()) if state_p.exists() and model_p.exists() else {}
        if state.get("done"):
            if i == 0:
                self.history += state.get("history", [])
            return lgb.Booster(model_str=model_p.read_text())
        init = lgb.Booster(model_str=model_p.read_text()) if state else None
        start = int(state.get("iteration", 0))
        if i == 0:
            self.history += state.get("history", [])
        name = "boosting" if n == 1 else f"boosting {i + 1}/{n}"
        task = bar.add_task(name, total=total, completed=start, info="")
        es = self.opts["early_stopping_rounds"] if self.config.train.early_stopping else None
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
        self.mlp = make_mlp(xtr.shape[1], n_out, list(o["hidden"]), float(o["dropout"]))

        def loss_fn(out, target, w):
            if reg:
                return (w * (out.squeeze(1) - target) ** 2).sum() / w.sum()
            return (w * torch.nn.functional.cross_entropy(out, target, reduction="none")).sum() / w.sum()

        def on_epoch(epoch: int, logs: dict[str, float]) -> None:
            for cb in self.callbacks:
                cb(epoch_offset + epoch, {**logs, "stage": "mlp"})

        cfg = LoopConfig.from_train(
            tc,
            lr=float(o["mlp_lr"] or tc.lr),
            weight_decay=float(o["weight_decay"]),
            schedule="constant",
            monitor="valid_loss",
            threads=int(o["threads"]),
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

    # ---- inference ------------------------------------------------------------------------------------
    def _frames(self, df: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """The rows with the shared ranks ("shared") and, with a coding, as its members read them ("coded")."""
        shared = self._encode_ordinal(df)
        return {"shared": shared, "coded": self.coding.recode(shared)} if self.coding else {"shared": shared}

    def _raw_proba(self, df: pd.DataFrame, frames: dict[str, pd.DataFrame] | None = None) -> np.ndarray:
        """Uncalibrated class probabilities (n, k), or predictions (n, 1) for regression."""
        if self.members:  # the frames are made once for all cross-fitted members
            self.prep.check(df)
            frames = self._frames(df)
            return np.mean([m._raw_proba(df, frames) for m in self.members], axis=0)
        frames = frames or self._frames(df)
        df = frames["shared"]
        self.prep.check(df)
        matrices: dict[bool, np.ndarray] = {}

        def dense(member: str) -> np.ndarray:
            coded = self.coded_prep is not None and member in self.coding.members
            if coded not in matrices:
                matrices[coded] = (
                    self.coded_prep.dense_matrix(frames["coded"] if "coded" in frames else self.coding.recode(df))
                    if coded
                    else self.prep.dense_matrix(df)
                )
            return matrices[coded]

        parts = []
        w = self.weights
        if w["lightgbm"] > 0:
            x = self.prep.lgb_matrix(df)
            boosters = [self.booster, *self.more_boosters]
            p = sum(b.predict(x, num_threads=int(self.opts["threads"])) for b in boosters) / len(boosters)
            p = np.stack([1 - p, p], 1) if self.objective == "binary" else p.reshape(len(df), -1)
            parts.append(w["lightgbm"] * p)
        if w["mlp"] > 0:
            import torch

            with torch.inference_mode():  # global thread count untouched: servers share torch
                out = self.mlp(torch.from_numpy(dense("mlp")))
            if self.objective == "regression":
                p = out.numpy().astype(np.float64) * self._ystd + self._ymean
            else:
                p = torch.softmax(out, 1).numpy().astype(np.float64)
            parts.append(w["mlp"] * p)
        if w["linear"] > 0:
            parts.append(w["linear"] * self._linear_out(dense("linear")))
        for k, m in self.sk.items():
            parts.append(w[k] * m.predict(dense(k), self.objective == "regression"))
        return np.sum(parts, axis=0)

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        p = self._raw_proba(df)
        if self.objective == "binary" and self.calibrator:
            pos = apply_calibrator(p[:, self.positive], self.calibrator)
            p = np.empty_like(p)
            p[:, self.positive], p[:, 1 - self.positive] = pos, 1 - pos
        return p

    def _frame(self, records: list[dict[str, Any]]) -> pd.DataFrame:
        if not records:
            return pd.DataFrame(columns=self.prep.features)
        for i, r in enumerate(records):
            if not isinstance(r, dict):
                raise BadRequest(
                    f"input {i} must be an object with fields {self.prep.features}", param=f"inputs.{i}"
                )
            missing = [c for c in self.prep.features if c not in r]
            if missing:
                raise BadRequest(
                    f"input {i} is missing field '{missing[0]}' (needs: {', '.join(self.prep.features)})",
                    param=missing[0],
                )
        return pd.DataFrame.from_records(records)

    def predict(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        df = self._frame(records)
        if not len(df):
            return []
        p = self.predict_proba(df)
        if self.objective == "regression":
            return [{"value": float(v)} for v in p[:, 0]]
        out = []
        for row in p:
            i = int(row.argmax())
            out.append(
                {
                    "label": self.classes[i],
                    "probability": float(row[i]),
                    "probabilities": {c: float(v) for c, v in zip(self.classes, row, strict=True)},
                }
            )
        return out

    def importance(self, data: pd.DataFrame, max_rows: int = 2000) -> list[dict[str, Any]]:
        """Permutation importance of each input column on (at most `max_rows` of) labelled data: the drop in
        ROC AUC (binary), accuracy (multi-class) or R² (regression) when the column is shuffled."""
        from sklearn.metrics import accuracy_score, r2_score, roc_auc_score

        from luodi.evaluate.explain import permutation_importance

        if len(data) > max_rows:
            data = data.sample(max_rows, random_state=0)
        y = self._target(data)
        X = data[self.prep.features].reset_index(drop=True)
        if self.objective == "regression":
            metric = "r2"
        else:
            metric = "roc_auc" if len(self.classes) == 2 and len(set(y.tolist())) == 2 else "accuracy"

        def score(Xp: pd.DataFrame) -> float:
            p = self.predict_proba(Xp)
            if metric == "r2":
                return float(r2_score(y, p[:, 0]))
            if metric == "roc_auc":
                return float(roc_auc_score(y == self.positive, p[:, self.positive]))
            return float(accuracy_score(y, p.argmax(1)))

        return permutation_importance(score, X, y, metric, seed=int(self.config.train.seed))

    def evaluate(self, data: pd.DataFrame) -> dict[str, Any]:
        y = self._target(data)
        p = self.predict_proba(data)
        if self.objective == "regression":
            return regression_metrics(y, p[:, 0])
        out = classification_report_data(y, p, self.classes, self.positive)
        out["n"] = float(len(y))
        return out

    # ---- persistence ----------------------------------------------------------------------------------
    def save(self, run_dir: Path) -> None:
        run_dir = Path(run_dir)
        for j, m in enumerate(self.members):
            m.save(run_dir / f"member{j}")
        if self.booster is not None and self.weights["lightgbm"] > 0:
            atomic.write_bytes(run_dir / "model.lgb.txt", self.booster.model_to_string().encode())
            for i, b in enumerate(self.more_boosters, 1):
                atomic.write_bytes(run_dir / f"model.lgb.{i}.txt", b.model_to_string().encode())
        if self.mlp is not None and self.weights["mlp"] > 0:
            save_torch_state(run_dir / "mlp.safetensors", {"model": self.mlp})
        for kind, member in self.sk.items():
            atomic.write_bytes(run_dir / f"{kind}.onnx", member.blob)
        atomic.write_json(run_dir / "preprocess.json", self.meta())

    def meta(self) -> dict[str, Any]:
        return {
            "task": self.name,
            "model_type": self.kind,
            "objective": self.objective,
            "classes": self.classes,
            "positive": self.positive,
            "label": self.cols.label,
            "weights": self.weights,
            "calibration": self.calibrator,
            "linear": self.linear,
            "lgb_seeds": 1 + len(self.more_boosters),
            "members": len(self.members),
            "ordinal": self.ordinal,
            "preprocessor": self.prep.to_json(),
            "coding": self.coding.to_json() if self.coded_prep is not None else None,
            "coded_preprocessor": self.coded_prep.to_json() if self.coded_prep is not None else None,
            "mlp": {
                "hidden": list(self.opts["hidden"]),
                "dropout": float(self.opts["dropout"]),
                "ymean": getattr(self, "_ymean", 0.0),
                "ystd": getattr(self, "_ystd", 1.0),
            },
            "history": self.history,
        }

    def load(self, run_dir: Path) -> None:
        run_dir = Path(run_dir)
        m = json.loads((run_dir / "preprocess.json").read_text())
        self.load_meta(m)
        if m.get("members"):
            cfg = self._member_config()
            self.members = []
            for j in range(int(m["members"])):
                member = TabularTask(cfg)
                member.load(run_dir / f"member{j}")
                self.members.append(member)
            return
        if self.weights["lightgbm"] > 0:
            import lightgbm as lgb

            self.booster = lgb.Booster(model_str=(run_dir / "model.lgb.txt").read_text())
            self.more_boosters = [
                lgb.Booster(model_str=(run_dir / f"model.lgb.{i}.txt").read_text())
                for i in range(1, int(m.get("lgb_seeds", 1)))
            ]
        self.sk = {
            k: OnnxMember((run_dir / f"{k}.onnx").read_bytes(), int(self.opts["threads"]))
            for k in SKLEARN_MEMBERS
            if self.weights[k] > 0
        }
        if self.weights["mlp"] > 0:
            mods = load_torch_state(run_dir / "mlp.safetensors")
            n_in = mods["model"]["0.weight"].shape[1]
            n_out = 1 if self.objective == "regression" else len(self.classes)
            self.mlp = make_mlp(n_in, n_out, m["mlp"]["hidden"], m["mlp"]["dropout"])
            self.mlp.load_state_dict(mods["model"])
            self.mlp.eval()

    def load_meta(self, m: dict[str, Any]) -> None:
        self.kind, self.objective, self.classes = m["model_type"], m["objective"], m["classes"]
        self.positive, self.calibrator = m["positive"], m["calibration"]
        w = m["weights"]  # a list [lightgbm, mlp(, linear)] in runs saved before forest / svm members
        w = dict(zip(("lightgbm", "mlp", "linear"), w, strict=False)) if isinstance(w, list) else w
        self.weights = {k: float(w.get(k, 0.0)) for k in MEMBERS}
        self.linear, self.ordinal = m.get("linear"), m.get("ordinal") or {}
        self.prep = Preprocessor.from_json(m["preprocessor"])
        if m.get("coded_preprocessor"):
            self.coding = Coding(**m["coding"])
            self.coded_prep = Preprocessor.from_json(m["coded_preprocessor"])
        else:
            self.coding, self.coded_prep = None, None
        self._ymean, self._ystd = m["mlp"]["ymean"], m["mlp"]["ystd"]
        self.history = m.get("history", [])

    # ---- HTTP schemas ---------------------------------------------------------------------------------
    def input_model(self) -> type[BaseModel]:
        prep = self.prep
        taken: set[str] = set()
        fields: dict[str, Any] = {}
        example = dict(prep.example)
        for c in prep.features:
            if c in self.ordinal:
                typ, desc = str | None, f"one of (in order): {', '.join(self.ordinal[c][:20])}"
                v = example.get(c)
                example[c] = None if v is None or v != v else self.ordinal[c][int(v)]
            elif c in prep.numeric:
                typ, desc = float | None, "number"
            else:
                typ, desc = str | None, f"one of: {', '.join(prep.categories[c][:20])}"
            fields[py_name(c, taken)] = (typ, Field(..., alias=c, description=desc))
        model = create_model(
            f"{_camel(self.config.name)}Input",
            __config__=ConfigDict(
                populate_by_name=True, extra="forbid", allow_inf_nan=False, json_schema_extra={"examples": [example]}
            ),
            **fields,
        )
        return model

    def output_model(self) -> type[BaseModel]:
        if self.objective == "regression":
            return create_model(f"{_camel(self.config.name)}Output", value=(float, ...))
        return create_model(
            f"{_camel(self.config.name)}Output",
            label=(str, Field(..., description=f"one of {self.classes}")),
            probability=(float, ...),
            probabilities=(dict[str, float], ...),
        )


def _camel(name: str) -> str:
    return "".join(p.capitalize() for p in name.replace("-", "_").split("_"))
