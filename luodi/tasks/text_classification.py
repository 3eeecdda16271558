"""Text classification (intents, spam, ...) with optional out-of-scope rejection.

Model (`model.type: embedding-head`): two heads whose log-probabilities are mixed — a neural head,
either logistic regression on frozen encoder features (`embeddings`: mean-pooled hidden states of a few
layers of the bundled MiniLM, cached on disk) or the encoder itself fine-tuned under a cosine classifier
(`finetune`, see text_finetune.py; `finetune_seeds` > 1 averages several fine-tuned encoders) — and
logistic regression on TF-IDF word + character n-grams. The
mixing weight (unless fixed in the options) and, for out-of-scope detection, a probability threshold are
tuned on validation.
Weights are stored as safetensors, vocabularies and label maps as JSON (no pickle). `luodi optimize` turns the
neural heads into one ONNX graph (float32, int8 or float16; onnx_text.py), which `load` then runs with ONNX Runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from luodi import crypto
from luodi.atomic import atomic_path, write_json
from luodi.config import AppConfig, model_options
from luodi.data.split import held_out, split_indices
from luodi.data.text import read_labelled_texts
from luodi.embeddings import get_encoder
from luodi.errors import BadRequest, ConfigError
from luodi.models import resolve
from luodi.options import TextClassificationOptions
from luodi.tasks.base import TaskBase, TextInputs
from luodi.tasks.linear_heads import LinearHead, fit_logreg
from luodi.tasks.onnx_text import OnnxHeads
from luodi.tasks.text_optimizing import META, TextOptimizing
from luodi.tasks.text_records import records_texts
from luodi.tasks.tfidf import fit_tfidf, tfidf_from_state, tfidf_state


class TextIn(BaseModel):
    text: str = Field(min_length=1, description="the text to classify")


class LabelScore(BaseModel):
    label: str
    score: float


class TextClassOut(BaseModel):
    label: str
    score: float = Field(description="probability of the predicted label")
    top_k: list[LabelScore]


class TextClassificationTask(TextOptimizing, TextInputs, TaskBase):
    name: ClassVar[str] = "text-classification"

    def __init__(self, config: AppConfig):
        super().__init__(config)
        if config.model.type not in (None, "embedding-head"):
            raise ConfigError(
                f"model.type '{config.model.type}' is not supported for text-classification; use 'embedding-head'",
                param="model.type",
            )
        self.opts: TextClassificationOptions = model_options(config)
        feats = set(self.opts.features)
        bad = feats - {"embeddings", "finetune", "tfidf"}
        if bad or not feats:
            raise ConfigError(
                f"model.options.features: {self.opts.features} not allowed; use a non-empty subset of "
                "[embeddings, finetune, tfidf]",
                param="model.options.features",
            )
        hw = self.opts.head_weights
        if hw is not None and (set(hw) != feats or min(hw.values()) < 0 or sum(hw.values()) <= 0):
            raise ConfigError(
                f"model.options.head_weights {hw}: give one non-negative weight per feature "
                f"({sorted(feats)}), not all zero",
                param="model.options.head_weights",
            )
        if {"embeddings", "finetune"} <= feats and hw is None:
            raise ConfigError(
                "model.options.features has two neural heads (embeddings and finetune): set "
                "model.options.head_weights, e.g. {finetune: 0.7, embeddings: 0.15, tfidf: 0.15}",
                param="model.options.head_weights",
            )
        self.source = config.model.source or "bundled:minilm-l6"
        for src in self.opts.finetune_sources:  # refuse a missing encoder now, not after the first members train
            try:
                resolve(src)
            except BadRequest as e:
                field = "model.options.finetune_sources"
                raise ConfigError(f"'{field}': {e}", param=field) from e
        self.classes: list[str] = []
        self.emb_head: LinearHead | None = None
        self.ft_model = None  # text_finetune.FinetunedEnsemble when features has `finetune`
        self.onnx: OnnxHeads | None = None  # the neural heads as one ONNX graph (an optimized run)
        self.tfidf = None
        self.tfidf_head: LinearHead | None = None
        self.tfidf_weight = self.opts.tfidf_weight
        self.oos_threshold = self.opts.oos_threshold

    # ------------------------------------------------------------ data
    def labels(self, data: pd.DataFrame):
        """Labels to stratify k-fold splits."""
        return data.label.values

    def read(self, path: str | None = None) -> pd.DataFrame:
        d = self.config.data
        path = path or d.path
        if not path:
            raise ConfigError("data.path is not set: point it at a csv/tsv/jsonl/json file", param="data.path")
        fmt = d.format if path == d.path else None
        df = read_labelled_texts(path, fmt, d.columns.get("text", "text"), d.columns.get("label", "label"), d.options)
        if path != d.path and "part" in df.columns:  # an evaluation file with named splits (clinc150's
            tests = [p for p in df.part.unique() if "test" in str(p)]  # data_full.json): score its test parts
            df = df[df.part.isin(tests)] if tests else df
        df = df[df.text.str.strip() != ""].reset_index(drop=True)
        if df.empty:
            raise BadRequest(f"{path}: no non-empty texts")
        return df

    def split(self, data: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """data.split.by 'part': the named parts are validation (clinc150); otherwise the seeded stratified split."""
        s = self.config.data.split
        s.only(self.name, "valid", "seed", "stratify", "by", "valid_parts")
        if s.by == "part":
            if "part" not in data.columns:
                raise ConfigError(
                    "data.split.by 'part' needs a file with named splits (clinc150 JSON)",
                    param="data.split.by",
                )
            mask = data.part.isin(s.valid_parts).values
            if not mask.any() or mask.all():
                raise ConfigError(
                    f"data.split.valid_parts {s.valid_parts} must name some but not all parts "
                    f"(parts: {sorted(data.part.unique())})",
                    param="data.split.valid_parts",
                )
            itr, iva = held_out(mask)
        else:
            itr, iva = split_indices(len(data), s, data.label.values)
        return data.iloc[itr].reset_index(drop=True), data.iloc[iva].reset_index(drop=True)

    # ------------------------------------------------------------ model
    def _emb(self, texts: list[str], progress: bool = False, cache: bool = True) -> np.ndarray:
        """Frozen-encoder features; cached on disk for training data, never for prediction requests."""
        return get_encoder(self.source).layer_features(
            texts, self.opts.layers, self.opts.max_length, progress, cache=cache
        )

    def _head_log_probs(self, texts: list[str], progress: bool = False) -> dict[str, np.ndarray]:
        """Each trained head's log-probabilities, keyed by feature name."""
        out = self.onnx.log_probs(texts) if self.onnx is not None else {}
        if self.ft_model is not None:
            out["finetune"] = self.ft_model.log_proba(texts, self.opts.max_length)
        if self.emb_head is not None and "embeddings" not in out:
            out["embeddings"] = self.emb_head.log_proba(self._emb(texts, progress, cache=False))
        if self.tfidf_head is not None:
            out["tfidf"] = self.tfidf_head.log_proba(self.tfidf.transform(texts))
        return out

    def _mix_weights(self, heads: list[str]) -> dict[str, float]:
        if self.opts.head_weights:
            total = sum(self.opts.head_weights.values())
            return {h: self.opts.head_weights[h] / total for h in heads}
        if len(heads) == 1:
            return {heads[0]: 1.0}
        neural = next(h for h in heads if h != "tfidf")
        return {neural: 1 - self.tfidf_weight, "tfidf": self.tfidf_weight}

    def _log_probs(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """Mixed log-probabilities, shape (n, n_labels)."""
        parts = self._head_log_probs(texts, progress)
        weights = self._mix_weights(list(parts))
        lp = sum(weights[h] * p for h, p in parts.items())
        return lp - np.logaddexp.reduce(lp, axis=1, keepdims=True)  # renormalize the geometric mixture

    def fit(self, train: pd.DataFrame, valid: pd.DataFrame, run_dir: Path, progress: bool = True) -> None:
        from rich.console import Console

        console = Console(quiet=not progress)
        if train.label.nunique() < 2:
            raise BadRequest("training data has fewer than 2 distinct labels; a classifier needs at least two")
        self.classes = sorted(train.label.unique())
        index = {lab: i for i, lab in enumerate(self.classes)}
        y = train.label.map(index).values
        texts = train.text.tolist()
        seed = self.config.train.seed
        cw = "balanced" if self.config.train.class_weights == "balanced" else None
        self.emb_head = self.tfidf_head = self.tfidf = self.ft_model = None
        if "finetune" in self.opts.features:
            from luodi.tasks.text_finetune import finetune

            console.log(f"fine-tuning {self.source} (top {self.opts.finetune_layers} layers) on {len(texts)} texts")
            held = None
            if valid is not None and not valid.empty:
                held = (valid.text.tolist(), valid.label.map(index).fillna(-1).astype(int).values)
            self.ft_model = finetune(
                texts,
                y,
                len(self.classes),
                source=self.source,
                opts=self.opts,
                train=self.config.train,
                run_dir=run_dir,
                valid=held,
                progress=progress,
            )
        if "embeddings" in self.opts.features:
            console.log(f"encoder features ({self.source}, layers {self.opts.layers}) for {len(texts)} texts")
            x = self._emb(texts, progress)
            console.log("fitting the embedding head")
            self.emb_head = fit_logreg(x, y, len(self.classes), self.opts.c_embeddings, cw, seed)
        if "tfidf" in self.opts.features:
            console.log("fitting the TF-IDF head (word 1-2 grams + char 2-5 grams)")
            self.tfidf = fit_tfidf(texts)
            self.tfidf_head = fit_logreg(self.tfidf.transform(texts), y, len(self.classes), self.opts.c_tfidf, cw, seed)
        if valid is None or valid.empty:
            self.tfidf_weight = 0.5 if self.tfidf_weight is None else self.tfidf_weight
            self.oos_threshold = 0.0 if self.oos_threshold is None else self.oos_threshold
            return
        self._tune(valid, console)  # the mixing weight and the out-of-scope threshold

    def _tune(self, valid: pd.DataFrame, console) -> None:
        """Pick the mixing weight and the out-of-scope threshold on validation data."""
        texts, gold = valid.text.tolist(), valid.label.values
        feats = set(self.opts.features)
        if len(feats) == 2 and "tfidf" in feats and self.opts.tfidf_weight is None and not self.opts.head_weights:
            heads = self._head_log_probs(texts)
            lt = heads.pop("tfidf")
            (le,) = heads.values()
            lab = np.array(self.classes)
            grid = np.round(np.arange(0, 1.01, 0.1), 2)
            accs = [(lab[((1 - w) * le + w * lt).argmax(1)] == gold).mean() for w in grid]
            self.tfidf_weight = float(grid[int(np.argmax(accs))])
            console.log(f"TF-IDF mixing weight {self.tfidf_weight} (validation accuracy {max(accs):.4f})")
        elif self.tfidf_weight is None:
            self.tfidf_weight = 0.5
        oos = self.opts.oos_label
        if oos and self.opts.oos_threshold is None:
            probs = np.exp(self._log_probs(texts))
            is_oos = gold == oos
            if not is_oos.any() or is_oos.all():
                console.log(f"validation has no '{oos}' and in-scope mix: out-of-scope threshold left at 0")
                self.oos_threshold = 0.0
                return
            base_acc = (self._labels_from_probs(probs, 0.0)[~is_oos] == gold[~is_oos]).mean()
            best = (-1.0, 0.0)  # (oos recall, threshold)
            for t in np.round(np.arange(0.0, 0.96, 0.01), 2):
                pred = self._labels_from_probs(probs, float(t))
                in_acc = (pred[~is_oos] == gold[~is_oos]).mean()
                recall = (pred[is_oos] == oos).mean()
                if in_acc >= base_acc - self.opts.oos_max_in_scope_drop and recall > best[0] + 1e-9:
                    best = (recall, float(t))
            self.oos_threshold = best[1]
            console.log(f"out-of-scope threshold {self.oos_threshold} (validation oos recall {best[0]:.3f})")

    def _labels_from_probs(self, probs: np.ndarray, threshold: float | None = None) -> np.ndarray:
        lab = np.array(self.classes, dtype=object)
        pred = lab[probs.argmax(1)]
        oos = self.opts.oos_label
        t = self.oos_threshold if threshold is None else threshold
        if oos and t:
            pred = np.where(probs.max(1) < t, oos, pred)
        return pred

    def _require_fitted(self):
        if not self.classes:
            raise BadRequest("this model is not trained yet: train it (luodi train APP) or load a run first")

    def predict(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self._require_fitted()
        texts = records_texts(records)
        probs = np.exp(self._log_probs(texts))
        labels = self._labels_from_probs(probs)
        k = min(self.opts.top_k, len(self.classes))
        out = []
        for p, lab in zip(probs, labels, strict=True):
            top = np.argsort(-p)[:k]
            rejected = lab != self.classes[int(p.argmax())]  # out-of-scope by threshold
            score = float(1 - p.max()) if rejected else float(p.max())
            out.append(
                {
                    "label": str(lab),
                    "score": round(score, 6),
                    "top_k": [{"label": self.classes[i], "score": round(float(p[i]), 6)} for i in top],
                }
            )
        return out

    def explain(self, records: list[dict[str, Any]], top: int | None = None) -> list[dict[str, Any]]:
        """Predictions with each word's integrated-gradients effect on the top class (token_attributions.py)."""
        from luodi.tasks.token_attributions import explain_texts

        self._require_fitted()
        return explain_texts(self, records, top)

    def evaluate(self, data: pd.DataFrame) -> dict[str, Any]:
        from sklearn.metrics import accuracy_score, f1_score

        self._require_fitted()
        if "label" not in data.columns:
            raise BadRequest("evaluation data needs labels (a `label` column)")
        gold = data.label.astype(str).values
        probs = np.exp(self._log_probs(data.text.tolist()))
        pred = self._labels_from_probs(probs)
        m: dict[str, Any] = {
            "accuracy": float(accuracy_score(gold, pred)),
            "macro_f1": float(f1_score(gold, pred, average="macro", zero_division=0)),
            "n": int(len(gold)),
        }
        oos = self.opts.oos_label
        if oos:
            ins, out = gold != oos, gold == oos
            if ins.any():
                m["in_scope_accuracy"] = float((pred[ins] == gold[ins]).mean())
            if out.any():
                m["oos_recall"] = float((pred[out] == oos).mean())
            if (pred == oos).any():
                m["oos_precision"] = float((gold[pred == oos] == oos).mean())
        unknown = sorted(set(gold) - set(self.classes) - ({oos} if oos else set()))
        if unknown:
            m["unknown_labels"] = unknown[:20]
        names = self.classes + ([oos] if oos and oos not in self.classes else [])
        if not unknown:  # material for the HTML report (confusion matrix; curves for few classes)
            index = {c: i for i, c in enumerate(names)}
            m["report"] = {
                "y_true": [index[g] for g in gold],
                "y_pred": [index[p] for p in pred],
                "labels": names,
            }
            if len(self.classes) <= 20 and len(names) == len(self.classes):
                m["report"]["proba"] = np.round(probs, 6).tolist()
                m["report"]["positive"] = len(names) - 1
        return m

    # ------------------------------------------------------------ persistence
    def save(self, run_dir: Path) -> None:
        from safetensors.numpy import save_file

        self._require_fitted()
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, np.ndarray] = {}
        if self.emb_head is not None:
            tensors.update(self.emb_head.tensors("emb"))
        meta: dict[str, Any] = {
            "task": self.name,
            "labels": self.classes,
            "source": self.source,
            "options": self.opts.model_dump(),
            "tfidf_weight": self.tfidf_weight,
            "oos_threshold": self.oos_threshold,
            "heads": [],
        }
        if self.emb_head is not None:
            meta["heads"].append("emb")
        if self.ft_model is not None:
            from luodi.tasks.text_finetune import save_finetuned

            meta["heads"].append("finetune")
            save_finetuned(self.ft_model, run_dir)
        if self.tfidf_head is not None:
            meta["heads"].append("tfidf")
            tensors.update(self.tfidf_head.tensors("tfidf"))
            vocab, idf = tfidf_state(self.tfidf)
            for name, arr in idf.items():
                tensors[f"tfidf.idf.{name}"] = arr
            write_json(run_dir / "tfidf_vocab.json", vocab)
        with atomic_path(run_dir / "model.safetensors") as tmp:
            save_file(tensors, str(tmp))
        write_json(run_dir / META, meta)

    def load(self, run_dir: Path) -> None:
        from safetensors.numpy import load

        run_dir = Path(run_dir)
        meta_path = run_dir / META
        if not meta_path.exists():
            raise BadRequest(f"{run_dir} holds no text-classification model (text_classification.json missing)")
        meta = crypto.read_json(meta_path)
        t = load(crypto.read_bytes(run_dir / "model.safetensors"))
        self.classes = meta["labels"]
        self.source = meta["source"]
        self.opts = TextClassificationOptions.model_validate(meta["options"])
        self.tfidf_weight = meta["tfidf_weight"]
        self.oos_threshold = meta["oos_threshold"]
        self.emb_head = LinearHead.from_tensors(t, "emb") if "emb" in meta["heads"] else None
        self.ft_model = self.onnx = None
        if "runtime" in meta:  # an optimized run: the neural heads are one ONNX graph
            self.onnx = OnnxHeads(run_dir, meta["runtime"]["graph"], self.opts.max_length)
        elif "finetune" in meta["heads"]:
            from luodi.tasks.text_finetune import load_finetuned, member_sources

            sources = member_sources(self.opts, self.source)
            self.ft_model = load_finetuned(
                run_dir, sources, len(self.classes), self.opts.head_scale, self.opts.encoder_layers, self.opts.pruned
            )
        self.tfidf_head = self.tfidf = None
        if "tfidf" in meta["heads"]:
            self.tfidf_head = LinearHead.from_tensors(t, "tfidf")
            vocab = crypto.read_json(run_dir / "tfidf_vocab.json")
            idf = {k.split(".")[-1]: v for k, v in t.items() if k.startswith("tfidf.idf.")}
            self.tfidf = tfidf_from_state(vocab, idf)

    def input_model(self) -> type[BaseModel]:
        return TextIn

    def output_model(self) -> type[BaseModel]:
        return TextClassOut
