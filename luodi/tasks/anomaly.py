"""Anomaly detection on tables: an autoencoder and/or an isolation forest scoring how unusual a row is,
optionally combined with a supervised LightGBM classifier (model.type hybrid) so known attack types are
caught by the classifier and unseen ones by the detectors.

Detector thresholds come from held-back *normal* training rows (the `quantile` option), never from the
validation labels, so validation rows of attack types held out of training (data.split.holdout) measure
honestly how new attacks are caught. Weights: safetensors (autoencoder, isolation-forest trees as arrays),
LightGBM text format, JSON metadata. No pickle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field, create_model

from luodi import atomic, crypto
from luodi.config import AppConfig, ModelConfig, model_options
from luodi.data.readers import read_app_table
from luodi.data.split import split_frame
from luodi.data.tabular import Columns, Preprocessor
from luodi.errors import BadRequest, ConfigError
from luodi.evaluate.metrics import classification_report_data
from luodi.options.anomaly import MODEL_TYPES, AnomalyOptions
from luodi.tasks.base import TableInputs, TaskBase, model_name
from luodi.tasks.onnx_anomaly import AnomalyOptimizing, OnnxAutoencoder
from luodi.tasks.tabular import TabularTask
from luodi.tasks.tabular.store import record_model
from luodi.tasks.tabular.torch_state import load_torch_state, save_torch_state, tensor_batches
from luodi.train import CHECKPOINT_DIR

TARGET = "__anomaly__"


def _c(n: np.ndarray) -> np.ndarray:
    """Average path length of an unsuccessful BST search among n points (isolation-forest normalizer)."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    out[n == 2] = 1.0
    return out


class IsolationForestArrays:
    """An sklearn IsolationForest as plain arrays; scores like sklearn's -score_samples (higher = odder)."""

    def __init__(self, trees: list[dict[str, np.ndarray]], max_samples: int):
        self.trees, self.max_samples = trees, max_samples

    @classmethod
    def fit(cls, x: np.ndarray, n_trees: int, max_samples: int, seed: int) -> IsolationForestArrays:
        from sklearn.ensemble import IsolationForest

        f = IsolationForest(
            n_estimators=n_trees, max_samples=min(max_samples, len(x)), random_state=seed
        ).fit(x)
        trees = []
        for est, feats in zip(f.estimators_, f.estimators_features_, strict=True):
            t = est.tree_
            depth = np.zeros(t.node_count, dtype=np.float64)
            for i in range(t.node_count):  # parents come before children in sklearn's node order
                for ch in (t.children_left[i], t.children_right[i]):
                    if ch >= 0:
                        depth[ch] = depth[i] + 1
            leaf_len = depth + _c(t.n_node_samples)
            trees.append(
                {
                    "left": t.children_left.astype(np.int64),
                    "right": t.children_right.astype(np.int64),
                    "feature": np.asarray(feats)[np.maximum(t.feature, 0)].astype(np.int64),
                    "threshold": t.threshold.astype(np.float64),
                    "path": leaf_len,
                }
            )
        return cls(trees, int(f.max_samples_))

    def score(self, x: np.ndarray) -> np.ndarray:
        total = np.zeros(len(x))
        rows = np.arange(len(x))
        for t in self.trees:
            node = np.zeros(len(x), dtype=np.int64)
            active = t["left"][node] >= 0
            while active.any():
                n = node[active]
                go_left = x[rows[active], t["feature"][n]] <= t["threshold"][n]
                node[active] = np.where(go_left, t["left"][n], t["right"][n])
                active = t["left"][node] >= 0
            total += t["path"][node]
        return 2.0 ** (-(total / len(self.trees)) / _c(np.array([self.max_samples]))[0])

    def tensors(self) -> dict[str, np.ndarray]:
        return {f"tree{i}.{k}": v for i, t in enumerate(self.trees) for k, v in t.items()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray], max_samples: int) -> IsolationForestArrays:
        n = 1 + max(int(k.split(".")[0][4:]) for k in tensors)
        trees = [
            {k: tensors[f"tree{i}.{k}"] for k in ("left", "right", "feature", "threshold", "path")}
            for i in range(n)
        ]
        return cls(trees, max_samples)


def make_autoencoder(n_in: int, hidden: list[int], dropout: float):
    import torch.nn as nn

    layers: list[Any] = []
    dims = [n_in, *hidden]
    for a, b in zip(dims[:-1], dims[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout)]
    rev = dims[::-1]
    for i, (a, b) in enumerate(zip(rev[:-1], rev[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(rev) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class AnomalyTask(AnomalyOptimizing, TableInputs, TaskBase):
    name: ClassVar[str] = "anomaly-detection"

    def __init__(self, config: AppConfig):
        super().__init__(config)
        self.cols = Columns.from_config(config.data.columns, need_label=False)
        self.opts: AnomalyOptions = model_options(config)
        self.kind = config.model.type or ("hybrid" if self.cols.label else "autoencoder")
        if self.kind not in MODEL_TYPES:
            raise ConfigError(
                f"'model.type' for anomaly-detection must be one of {', '.join(MODEL_TYPES)} "
                f"(got {self.kind!r})"
            )
        if self.kind == "hybrid" and not self.cols.label:
            raise ConfigError("model.type hybrid trains a classifier: set data.columns.label")
        default = {
            "autoencoder": ["autoencoder"],
            "isolation-forest": ["isolation-forest"],
            "hybrid": ["autoencoder", "isolation-forest"],
        }[self.kind]
        self.detectors: list[str] = list(default if self.opts.detectors is None else self.opts.detectors)
        self.prep: Preprocessor | None = None
        self.ae = None
        self.iforest: IsolationForestArrays | None = None
        self.thresholds: dict[str, float] = {}
        self.clf: TabularTask | None = None

    # ---- data -----------------------------------------------------------------------------------------
    def read(self, path: str | None) -> pd.DataFrame:
        d = self.config.data
        df = read_app_table(
            path if path is not None else d.path,
            d.format,
            d.options,
            self.cols.names,
            self.cols.label,
            field="data.path" if path is None else "data",
        )
        if self.cols.label and self.cols.label in df.columns:
            df[self.cols.label] = df[self.cols.label].astype(str).str.strip()
        return df

    def split(self, data: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        return split_frame(data, self.config.data.split, self.cols.label)

    def labels(self, data: pd.DataFrame) -> Any:
        return data[self.cols.label].astype(str).to_numpy() if self.cols.label in data.columns else None

    def _is_anomaly(self, df: pd.DataFrame) -> np.ndarray:
        lab = self.cols.label
        if not lab or lab not in df.columns:
            raise BadRequest(
                f"evaluation needs the label column '{lab}' (data.columns.label)", param=lab or "label"
            )
        return (self.cols.map_labels(df[lab]) != self.opts.normal).to_numpy()

    def _feature_cols(self) -> Columns:
        return Columns(
            label=self.cols.label,
            features=self.cols.features,
            drop=self.cols.drop,
            categorical=self.cols.categorical,
        )

    # ---- training -------------------------------------------------------------------------------------
    def fit(self, train: pd.DataFrame, valid: pd.DataFrame, run_dir: Path, progress: bool = True) -> None:
        """The detectors on normal training rows (thresholds from held-back ones) and, for hybrid, the classifier
        (early-stopped on `valid`)."""
        run_dir = Path(run_dir)
        ckpt = run_dir / CHECKPOINT_DIR
        ckpt.mkdir(parents=True, exist_ok=True)
        self.prep = Preprocessor.fit(train, self._feature_cols())
        tc = self.config.train
        if self.cols.label and self.cols.label in train.columns:
            normal = train[~self._is_anomaly(train)]
            if len(normal) < 10:
                raise ConfigError(
                    f"fewer than 10 training rows are normal (label '{self.opts.normal}'); "
                    "set model.options.normal to the label of normal rows"
                )
        else:
            normal = train
        rng = np.random.default_rng(tc.seed)
        held = rng.random(len(normal)) < self.opts.threshold_rows
        fit_rows, thr_rows = normal[~held], normal[held]
        if self.kind == "hybrid":
            self._fit_classifier(train, valid, ckpt / "classifier", progress)
        if "autoencoder" in self.detectors:
            self._fit_ae(fit_rows, ckpt, progress)
            self.thresholds["autoencoder"] = float(np.quantile(self._ae_score(thr_rows), self.opts.quantile))
        if "isolation-forest" in self.detectors:
            self.iforest = IsolationForestArrays.fit(
                self.prep.dense_matrix(fit_rows), self.opts.trees, self.opts.max_samples, tc.seed
            )
            s = self.iforest.score(self.prep.dense_matrix(thr_rows))
            self.thresholds["isolation-forest"] = float(np.quantile(s, self.opts.quantile))

    def _classifier_config(self) -> AppConfig:
        c = self.config
        cols = {
            "label": TARGET,
            "features": self.prep.features,
            "categorical": self.prep.categorical,
            "positive": self.opts.attack_label,
        }
        return c.model_copy(
            update={
                "task": "tabular",
                "data": c.data.model_copy(update={"columns": cols}),
                "model": ModelConfig(
                    type=self.opts.classifier_type, options=dict(c.model.options.get("classifier") or {})
                ),
                "train": c.train.model_copy(update={"lr": self.opts.classifier_lr}),
            }
        )

    def _with_target(self, df: pd.DataFrame) -> pd.DataFrame:
        out = df.copy()
        out[TARGET] = np.where(self._is_anomaly(df), self.opts.attack_label, self.opts.normal)
        return out

    def _fit_classifier(self, train, valid, ckpt_dir: Path, progress: bool) -> None:
        self.clf = TabularTask(self._classifier_config())
        self.clf.callbacks = self.callbacks
        self.clf.fit(self._with_target(train), self._with_target(valid), ckpt_dir, progress=progress)
        self.history = list(self.clf.history)

    def _fit_ae(self, rows: pd.DataFrame, ckpt: Path, progress: bool) -> None:
        """The autoencoder on the shared torch loop; early stopping on 10% of the rows held back."""
        import torch

        from luodi.train.torch_loop import LoopConfig, train_loop

        tc = self.config.train
        torch.manual_seed(tc.seed)
        x = torch.from_numpy(self.prep.dense_matrix(rows))
        n_val = max(1, len(x) // 10)
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(tc.seed))
        xva, xtr = x[perm[:n_val]], x[perm[n_val:]]
        self.ae = make_autoencoder(x.shape[1], list(self.opts.ae_hidden), self.opts.ae_dropout)
        offset = len(self.history)  # epochs of the hybrid's classifier come first

        def on_epoch(epoch: int, logs: dict[str, float]) -> None:
            for cb in self.callbacks:
                cb(offset + epoch, {**logs, "stage": "autoencoder"})

        cfg = LoopConfig.from_train(
            tc,
            weight_decay=1e-5,
            schedule="constant",
            monitor="valid_loss",
            threads=self.opts.threads,
        )
        res = train_loop(
            self.ae,
            tensor_batches(xtr, batch_size=tc.batch_size),
            lambda model, b: ((model(b[0]) - b[0]) ** 2).mean(),
            lambda model: {"valid_loss": float(((model(xva) - xva) ** 2).mean())},
            ckpt / "autoencoder",
            cfg,
            progress=progress,
            on_epoch=on_epoch,
        )
        self.history += [
            {**h, "epoch": offset + int(h["epoch"]), "stage": "autoencoder"} for h in res.history
        ]
        self.ae.eval()

    # ---- scoring --------------------------------------------------------------------------------------
    def _ae_score(self, df: pd.DataFrame) -> np.ndarray:
        if isinstance(self.ae, OnnxAutoencoder):  # an optimized run (luodi optimize --method onnx)
            return self.ae.error(self.prep.dense_matrix(df))
        import torch

        x = torch.from_numpy(self.prep.dense_matrix(df))
        with torch.inference_mode():  # global thread count untouched: servers share torch
            return ((self.ae(x) - x) ** 2).mean(1).numpy().astype(np.float64)

    def scores(self, df: pd.DataFrame) -> dict[str, np.ndarray]:
        """Per detector: score / threshold (>= 1 means anomalous); `classifier`: P(attack)."""
        self.prep.check(df)
        out: dict[str, np.ndarray] = {}
        if self.ae is not None:
            out["autoencoder"] = self._ae_score(df) / max(self.thresholds["autoencoder"], 1e-12)
        if self.iforest is not None:
            out["isolation-forest"] = (
                self.iforest.score(self.prep.dense_matrix(df)) / self.thresholds["isolation-forest"]
            )
        if self.clf is not None:
            p = self.clf.predict_proba(df)
            out["classifier"] = p[:, self.clf.positive]
        return out

    def decide(self, s: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(is_anomaly, a combined score in [0, 1]: the max of P(attack) and squashed detector ratios)."""
        parts = []
        for k, v in s.items():
            parts.append(v if k == "classifier" else 1 - 0.5**v)  # ratio 1 (threshold) -> 0.5
        combined = np.max(parts, axis=0)
        return combined >= 0.5, combined

    def predict(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not records:
            return []
        for i, r in enumerate(records):
            missing = (
                [c for c in self.prep.features if c not in r] if isinstance(r, dict) else self.prep.features
            )
            if missing:
                raise BadRequest(f"input {i} is missing field '{missing[0]}'", param=missing[0])
        df = pd.DataFrame.from_records(records)
        s = self.scores(df)
        flag, score = self.decide(s)
        normal, attack = self.opts.normal, self.opts.attack_label
        return [
            {
                "label": attack if flag[i] else normal,
                "is_anomaly": bool(flag[i]),
                "anomaly_score": float(score[i]),
                "scores": {k: float(v[i]) for k, v in s.items()},
            }
            for i in range(len(df))
        ]

    def evaluate(self, data: pd.DataFrame) -> dict[str, Any]:
        y = self._is_anomaly(data).astype(int)
        s = self.scores(data)
        flag, score = self.decide(s)
        proba = np.stack([1 - score, score], 1)
        out = classification_report_data(
            y,
            proba,
            [self.opts.normal, self.opts.attack_label],
            positive=1,
            pred=flag.astype(int),
        )
        out["n"] = float(len(y))
        unseen = np.zeros(len(y), dtype=bool)
        for col, values in self.config.data.split.holdout.items():
            if col in data.columns:
                unseen |= data[col].astype(str).isin([str(v) for v in values]).to_numpy()
        unseen &= y == 1
        if unseen.any():
            out["unseen_recall"] = float(flag[unseen].mean())  # attack types never seen in training, caught
            out["unseen_n"] = float(unseen.sum())
        seen = (y == 1) & ~unseen
        if seen.any():
            out["seen_recall"] = float(flag[seen].mean())
        if (y == 0).any():
            out["false_positive_rate"] = float(flag[y == 0].mean())
        for k, v in s.items():
            if len(np.unique(y)) == 2 and k != "classifier":
                from sklearn.metrics import roc_auc_score

                out[f"roc_auc_{k.replace('-', '_')}"] = float(roc_auc_score(y, v))
        return out

    # ---- persistence ----------------------------------------------------------------------------------
    def save(self, run_dir: Path) -> None:
        from safetensors.numpy import save

        run_dir = Path(run_dir)
        if self.ae is not None and not isinstance(self.ae, OnnxAutoencoder):
            save_torch_state(run_dir / "autoencoder.safetensors", {"model": self.ae})
        if self.iforest is not None:
            atomic.write_bytes(run_dir / "isolation_forest.safetensors", save(self.iforest.tensors()))
        if self.clf is not None:
            self.clf.save(run_dir / "classifier")
        atomic.write_json(
            run_dir / "anomaly.json",
            {
                "task": self.name,
                "model_type": self.kind,
                "detectors": self.detectors,
                "thresholds": self.thresholds,
                "preprocessor": self.prep.to_json(),
                "ae_hidden": list(self.opts.ae_hidden),
                "iforest_max_samples": self.iforest.max_samples if self.iforest else None,
                "classifier": self.clf is not None,
                "history": self.history,
                **({"ae_runtime": {"graph": self.ae.path.name, "precision": "float32"}}
                   if isinstance(self.ae, OnnxAutoencoder) else {}),
            },
        )

    def load(self, run_dir: Path) -> None:
        run_dir = Path(run_dir)
        m = crypto.read_json(run_dir / "anomaly.json")
        self.kind, self.detectors, self.thresholds = m["model_type"], m["detectors"], m["thresholds"]
        self.prep = Preprocessor.from_json(m["preprocessor"])
        self.history = m.get("history", [])
        if "ae_runtime" in m:  # an optimized run: the autoencoder and its error as one ONNX graph
            self.ae = OnnxAutoencoder(run_dir / m["ae_runtime"]["graph"], self.opts.threads)
        elif "autoencoder" in self.detectors:
            mods = load_torch_state(run_dir / "autoencoder.safetensors")
            self.ae = make_autoencoder(mods["model"]["0.weight"].shape[1], m["ae_hidden"], 0.0)
            self.ae.load_state_dict(mods["model"])
            self.ae.eval()
        if "isolation-forest" in self.detectors:
            from safetensors.numpy import load

            self.iforest = IsolationForestArrays.from_tensors(
                load(crypto.read_bytes(run_dir / "isolation_forest.safetensors")), m["iforest_max_samples"]
            )
        if m["classifier"]:
            self.clf = TabularTask(self._classifier_config())
            self.clf.load(run_dir / "classifier")

    # ---- HTTP schemas ---------------------------------------------------------------------------------
    def input_model(self) -> type[BaseModel]:
        return record_model(self.config.name, self.prep, {})

    def output_model(self) -> type[BaseModel]:
        return create_model(
            model_name(self.config.name, "Output"),
            label=(str, Field(..., description=f"{self.opts.normal} or {self.opts.attack_label}")),
            is_anomaly=(bool, ...),
            anomaly_score=(float, Field(..., description="0..1; >= 0.5 is anomalous")),
            scores=(
                dict[str, float],
                Field(..., description="per detector: score/threshold; classifier: P(attack)"),
            ),
        )
