"""The tabular task: reading and splitting the table, fitting the members (or k cross-fitted copies of the
whole model with `inner_folds`), their weighted average, calibration, predictions and metrics.
Members are fitted in members.py, stored in store.py; the package docstring says what each option does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from luodi.config import AppConfig, model_options
from luodi.data.balance import resample, sample_weights
from luodi.data.coding import Coding, check_ordinal, rank_columns
from luodi.data.readers import read_app_table
from luodi.data.split import kfold_indices, split_frame
from luodi.data.tabular import Columns, Preprocessor
from luodi.errors import BadRequest, ConfigError
from luodi.evaluate.calibration import apply_calibrator, fit_calibrator
from luodi.evaluate.metrics import classification_report_data, regression_metrics
from luodi.options.tabular import MODEL_TYPES, TabularOptions
from luodi.tasks.base import TableInputs, TaskBase
from luodi.tasks.tabular.explaining import Explaining
from luodi.tasks.tabular.fairness import GroupThresholds
from luodi.tasks.tabular.members import MemberFitting
from luodi.tasks.tabular.optimizing import Optimizing
from luodi.tasks.tabular.rows import Matrices, PandasRows, RowCoder
from luodi.tasks.tabular.sklearn_members import SKLEARN_MEMBERS, OnnxBatch, OnnxMember
from luodi.tasks.tabular.store import TabularStore
from luodi.train import CHECKPOINT_DIR
from luodi.train.privacy import PRIVACY_FILE


def progress_bars(enabled: bool):
    """The rich progress display of a fit: one bar per LightGBM booster / scikit-learn member."""
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


class TabularTask(Explaining, Optimizing, TableInputs, MemberFitting, TabularStore, TaskBase):
    name: ClassVar[str] = "tabular"

    def __init__(self, config: AppConfig):
        super().__init__(config)
        self.cols = Columns.from_config(config.data.columns, need_label=True)
        self.opts: TabularOptions = model_options(config)
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
        self.ordinal = check_ordinal(self.opts.ordinal, "model.options.ordinal")
        coding = self.opts.coding
        self.coding = Coding.from_options(coding.model_dump() if coding else None, self.ordinal)
        self.coded_prep: Preprocessor | None = None  # the coding members' preprocessor
        self.calibrator: dict[str, Any] | None = None
        self.weights = self.opts.weights(self.kind)
        self.members: list[TabularTask] = []  # cross-fitted members (model.options.inner_folds)
        self.fairness: GroupThresholds | None = None  # per-group decision thresholds (train.fairness)
        self._coder: RowCoder | bool | None = None  # records -> matrices without pandas (built on first use)
        self._mlp_layers: list[tuple[np.ndarray, np.ndarray]] | None = None  # the MLP's weights as arrays
        self._onnx_batch: OnnxBatch | bool | None = None  # every member's forest / SVM in one session
        self.ensemble = None  # an optimized run: the whole ensemble as one ONNX session (optimizing.py)
        self.onnx_info: dict[str, Any] | None = None  # preprocess.json's "onnx" (its graph, or "in": "parent")

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
        if self.opts.objective == "regression":
            return True
        if self.opts.objective != "auto" or self.cols.label_map:
            return False
        y = df[self.cols.label]
        return pd.api.types.is_float_dtype(y) and y.nunique() > 20

    def labels(self, data: pd.DataFrame) -> Any:
        return None if self.objective == "regression" else data[self.cols.label].astype(str).to_numpy()

    def split(self, data: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        return split_frame(data, self.config.data.split, self.cols.label)

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
        if self.opts.objective in ("binary", "multiclass") and self.opts.objective != self.objective:
            raise ConfigError(
                f"'model.options.objective' is {self.opts.objective} but the label has "
                f"{len(self.classes)} classes"
            )
        pos = self.cols.positive if self.cols.positive is not None else counts.index[-1]  # default: minority
        if str(pos) not in self.classes:
            raise ConfigError(f"'data.columns.positive' {pos!r} is not a label value; labels: {self.classes}")
        self.positive = self.classes.index(str(pos))

    def encode_ordinal(self, df: pd.DataFrame) -> pd.DataFrame:
        """Ordered categorical columns (model.options.ordinal) -> their rank; unknown values -> NaN."""
        return rank_columns(df, self.ordinal, "model.options.ordinal")

    def _dense(self, df: pd.DataFrame, member: str) -> np.ndarray:
        """The standardized + one-hot matrix `member` reads: its own compact coding, or the shared one."""
        if self.coded_prep is not None and member in self.coding.members:
            return self.coded_prep.dense_matrix(self.coding.recode(df))
        return self.prep.dense_matrix(df)

    def privacy_blocker(self) -> str | None:
        """DP-SGD trains the MLP member only, once: other members or cross-fitted copies would use the rows
        outside the accounting (or spend the budget once per copy)."""
        others = [m for m, w in self.weights.items() if w > 0 and m != "mlp"]
        if others:
            return (f"only the MLP member trains with DP-SGD and this model also has {', '.join(others)}; set "
                    "model.type: mlp (or model.options.ensemble_weights: {mlp: 1})")
        if self.opts.inner_folds:
            return "each cross-fitted member (model.options.inner_folds) would spend the budget again; set it to 0"
        if self.config.train.resample != "none":
            return "train.resample repeats rows, which the per-example accounting does not allow; remove it"
        return None

    def refit_blocker(self) -> str | None:
        if self.opts.inner_folds:
            return None  # members early-stop on inner folds and calibrate out of fold: validation only reports
        return "with model.options.inner_folds 0 the model early-stops and calibrates on the validation rows"

    def fit(self, train: pd.DataFrame, valid: pd.DataFrame, run_dir: Path, progress: bool = True) -> None:
        """Fit the members on `train` (early stopping and calibration on `valid` unless inner_folds)."""
        ckpt = Path(run_dir) / CHECKPOINT_DIR
        ckpt.mkdir(parents=True, exist_ok=True)
        self._coder, self._mlp_layers, self._onnx_batch = None, None, None
        raw_train, raw_valid = train, valid
        train, valid = self.encode_ordinal(train), self.encode_ordinal(valid)
        self._setup(train)
        if self.config.train.fairness and self.objective != "binary":
            raise ConfigError(f"'train.fairness' needs a binary label; this one is {self.objective}")
        y_tr, y_va = self._target(train), self._target(valid)
        if self.opts.inner_folds:
            self._fit_fairness(raw_train, self._fit_crossfit(raw_train, ckpt, progress))
            return
        tc = self.config.train
        rows = (
            np.arange(len(train)) if self.objective == "regression" else resample(y_tr, tc.resample, tc.seed)
        )
        sw = None if self.objective == "regression" else sample_weights(y_tr[rows], tc.class_weights)
        epochs_done = 0
        with progress_bars(progress) as bar:
            if self.weights["lightgbm"] > 0:
                self._fit_lgb(train.iloc[rows], y_tr[rows], sw, valid, y_va, ckpt, bar)
                epochs_done = tc.epochs
            if self.weights["mlp"] > 0:
                self._fit_mlp(
                    train.iloc[rows], y_tr[rows], sw, valid, y_va, ckpt, progress, epoch_offset=epochs_done
                )
                spent = ckpt / "mlp" / PRIVACY_FILE  # DP-SGD's record, from the loop's folder into the run's
                if spent.exists():
                    os.replace(spent, Path(run_dir) / PRIVACY_FILE)
            if self.weights["linear"] > 0:
                self._fit_linear(train.iloc[rows], y_tr[rows], sw)
            for kind in SKLEARN_MEMBERS:
                if self.weights[kind] > 0:
                    self._fit_sklearn(kind, train.iloc[rows], y_tr[rows], sw, bar)
        if self.objective == "binary":
            raw = self._raw_proba(raw_valid)[:, self.positive]
            self.calibrator = fit_calibrator(raw, (y_va == self.positive).astype(int), self.opts.calibration)
            self._fit_fairness(raw_valid, raw)

    def _fit_fairness(self, frame: pd.DataFrame, raw: np.ndarray) -> None:
        """Per-group thresholds (train.fairness) on held-out probabilities of `frame`'s rows."""
        options = self.config.train.fairness
        if options is None:
            return
        y = self._target(frame) == self.positive
        self.fairness = GroupThresholds.fit(frame, apply_calibrator(raw, self.calibrator), y, options)

    def _member_config(self) -> AppConfig:
        """The app config of one cross-fitted member: same model, no inner folds, no calibration."""
        model = self.config.model.model_copy(
            update={"options": {**self.config.model.options, "inner_folds": 0, "calibration": "none"}}
        )
        train = self.config.train.model_copy(update={"fairness": None})
        return self.config.model_copy(update={"model": model, "train": train})

    def _fit_crossfit(self, train: pd.DataFrame, ckpt: Path, progress: bool) -> np.ndarray:
        """k members on k-1 folds each (early stopping on the k-th); calibrator on out-of-fold predictions,
        which are returned. The validation split is not read: its score stays an honest estimate."""
        k, seed = self.opts.inner_folds, self.config.train.seed
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
            self.calibrator = fit_calibrator(oof, y, self.opts.calibration)
        return oof

    # ---- inference ------------------------------------------------------------------------------------
    def _frames(self, df: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """The rows with the shared ranks ("shared") and, with a coding, as its members read them ("coded")."""
        shared = self.encode_ordinal(df)
        return {"shared": shared, "coded": self.coding.recode(shared)} if self.coding else {"shared": shared}

    def _raw_proba(
        self, df: pd.DataFrame | PandasRows | Any, only: tuple[str, ...] = ()
    ) -> np.ndarray:
        """Uncalibrated class probabilities (n, k), or predictions (n, 1) for regression, of a frame or of rows
        already encoded (PandasRows / rows.ArrayRows), averaged over cross-fitted members; `only`: the weighted
        parts of these members alone (explanations ablate the members TreeSHAP cannot read)."""
        rows = PandasRows(self, df) if isinstance(df, pd.DataFrame) else df
        members = self.members or [self]
        mats = [rows.matrices(j) for j in range(len(members))]
        if self.ensemble is not None:  # an ONNX run: every member's every part from one session call
            onnx = self.ensemble.run(mats, self.objective == "regression")
        else:
            onnx = self._onnx_outputs(mats, only)
        return np.mean([m._member_proba(mats[j], only, onnx[j]) for j, m in enumerate(members)], axis=0)

    def _onnx_outputs(self, mats: list[Matrices], only: tuple[str, ...]) -> list[dict[str, np.ndarray]]:
        """The cross-fitted members' forest / SVM outputs from one onnxruntime call (sklearn_members.OnnxBatch);
        else empty (each member then runs its own: one model, or `only` leaving some out)."""
        members = self.members or [self]
        kinds = [k for k in members[0].sk if members[0].weights[k] > 0]
        if not self.members or not kinds or (only and not set(kinds) <= set(only)):
            return [{} for _ in members]
        if self._onnx_batch is None:
            try:
                self._onnx_batch = OnnxBatch([m.sk[k] for m in members for k in kinds], self.opts.threads)
            except Exception:  # graphs onnx.compose cannot put side by side: one call per member, as before
                self._onnx_batch = False
        if not self._onnx_batch:
            return [{} for _ in members]
        xs = [mats[j](m._matrix_of(k)) for j, m in enumerate(members) for k in kinds]
        outs = iter(self._onnx_batch.predict(xs, self.objective == "regression"))
        return [{k: next(outs) for k in kinds} for _ in members]

    def _member_proba(
        self, x: Matrices, only: tuple[str, ...] = (), onnx: dict[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """One (not cross-fitted) model's weighted members on its matrices `x` (`onnx`: the outputs of its parts
        computed together with the other members': forest / SVM by OnnxBatch, every part in an ONNX run)."""
        onnx = onnx or {}
        parts = []
        w = {k: v if not only or k in only else 0.0 for k, v in self.weights.items()}
        if w["lightgbm"] > 0:
            parts.append(w["lightgbm"] * (onnx["lightgbm"] if "lightgbm" in onnx else self._lgb_proba(x("lgb"))))
        if w["mlp"] > 0:
            parts.append(w["mlp"] * (onnx["mlp"] if "mlp" in onnx else self._mlp_out(x(self._matrix_of("mlp")))))
        if w["linear"] > 0:
            out = onnx["linear"] if "linear" in onnx else self._linear_out(x(self._matrix_of("linear")))
            parts.append(w["linear"] * out)
        for k in SKLEARN_MEMBERS:
            if w[k] > 0:
                reg = self.objective == "regression"
                out = onnx[k] if k in onnx else self.sk[k].predict(x(self._matrix_of(k)), reg)
                parts.append(w[k] * out)
        return np.sum(parts, axis=0)

    def _matrix_of(self, member: str) -> str:
        """Which dense matrix `member` reads: its coding's ("coded") or the shared one ("dense")."""
        return "coded" if self.coded_prep is not None and member in self.coding.members else "dense"

    def _mlp_out(self, x: np.ndarray) -> np.ndarray:
        """The MLP's probabilities (prediction for regression), its layers run as float32 numpy (the torch
        module's numbers to float rounding, without torch's per-call and thread costs on single records)."""
        if self._mlp_layers is None:
            self._mlp_layers = self._mlp_weights()
        h = np.asarray(x, dtype=np.float32)
        for i, (w, b) in enumerate(self._mlp_layers):
            h = h @ w + b
            if i < len(self._mlp_layers) - 1:
                h = np.maximum(h, 0)  # ReLU; dropout is the identity in eval mode
        if self.objective == "regression":
            return h.astype(np.float64) * self._ystd + self._ymean
        e = np.exp(h - h.max(1, keepdims=True))
        return (e / e.sum(1, keepdims=True)).astype(np.float64)

    def _mlp_weights(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The MLP's linear layers as (W (in, out), b) float32 arrays, in order."""
        import torch

        linears = [mod for mod in self.mlp if isinstance(mod, torch.nn.Linear)]
        return [(m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy()) for m in linears]

    def _rows(self, records: list[dict[str, Any]]) -> PandasRows | Any:
        """Checked records encoded for the members: directly (RowCoder) or, for values it leaves to pandas,
        through a DataFrame."""
        self._check_records(records)
        if self._coder is None:
            try:
                self._coder = RowCoder(self)
            except ValueError:
                self._coder = False
        parsed = self._coder.parse(records) if self._coder else None
        if parsed is None:
            return PandasRows(self, self._frame(records))
        return self._coder.matrices(*parsed)

    def _lgb_proba(self, x: np.ndarray) -> np.ndarray:
        """The boosters' averaged class probabilities (n, k), or predictions (n, 1), from their matrix."""
        boosters = [self.booster, *self.more_boosters]
        p = sum(b.predict(x, num_threads=self.opts.threads) for b in boosters) / len(boosters)
        return np.stack([1 - p, p], 1) if self.objective == "binary" else p.reshape(len(x), -1)

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        return self._calibrate(self._raw_proba(df))

    def _calibrate(self, p: np.ndarray) -> np.ndarray:
        """Uncalibrated probabilities -> the served ones (binary apps with a calibrator)."""
        if self.objective == "binary" and self.calibrator:
            pos = apply_calibrator(p[:, self.positive], self.calibrator)
            p = np.empty_like(p)
            p[:, self.positive], p[:, 1 - self.positive] = pos, 1 - pos
        return p

    def _frame(self, records: list[dict[str, Any]]) -> pd.DataFrame:
        if not records:
            return pd.DataFrame(columns=self.prep.features)
        self._check_records(records)
        return pd.DataFrame.from_records(records)

    def _check_records(self, records: list[dict[str, Any]]) -> None:
        """Each record an object with every feature field; else BadRequest naming the first that is not."""
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

    def predict(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not records:
            return []
        rows = self._rows(records)
        return self._outputs(rows, self._calibrate(self._raw_proba(rows)), records)

    def _outputs(
        self, df: pd.DataFrame | Any, p: np.ndarray, records: list[dict[str, Any]] | None = None
    ) -> list[dict[str, Any]]:
        """The answers for the rows of `df` from their served probabilities (predictions) `p`."""
        if self.objective == "regression":
            return [{"value": float(v)} for v in p[:, 0]]
        if self.fairness is not None and not isinstance(df, pd.DataFrame):
            df = self._frame(records)  # encoded rows: the group column decides, read from the records
        chosen = self._decisions(df, p)
        out = []
        for row, i in zip(p, chosen, strict=True):
            out.append(
                {
                    "label": self.classes[i],
                    "probability": float(row[i]),
                    "probabilities": {c: float(v) for c, v in zip(self.classes, row, strict=True)},
                }
            )
        return out

    def _decisions(self, df: pd.DataFrame, p: np.ndarray) -> np.ndarray:
        """The predicted class index of each row: the most probable, or with train.fairness the positive class
        where its probability reaches the row's group threshold."""
        if self.fairness is None or self.objective != "binary":
            return p.argmax(1)
        chosen = self.fairness.selected(df, p[:, self.positive])
        return np.where(chosen, self.positive, 1 - self.positive)

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
        out = classification_report_data(y, p, self.classes, self.positive, self._decisions(data, p))
        out["n"] = float(len(y))
        return out

