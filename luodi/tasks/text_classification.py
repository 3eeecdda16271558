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

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from luodi.atomic import atomic_path, write_json
from luodi.config import AppConfig, model_options
from luodi.data.split import held_out, split_indices
from luodi.data.text import read_labelled_texts
from luodi.embeddings import get_encoder
from luodi.errors import BadRequest, ConfigError
from luodi.models import resolve
from luodi.options import TextClassificationOptions
from luodi.tasks.base import TaskBase, TextInputs
from luodi.tasks.linear_heads import LinearHead, fit_logreg, fit_tfidf, tfidf_from_state, tfidf_state
from luodi.tasks.onnx_text import GRAPH, TOKENIZER, OnnxHeads
from luodi.tasks.text_records import records_texts


class TextIn(BaseModel):
    text: str = Field(min_length=1, description="the text to classify")


class LabelScore(BaseModel):
    label: str
    score: float


class TextClassOut(BaseModel):
    label: str
    score: float = Field(description="probability of the predicted label")
    top_k: list[LabelScore]


META = "text_classification.json"


class TextClassificationTask(TextInputs, TaskBase):
    name: ClassVar[str] = "text-classification"
    optimize_methods: ClassVar[tuple[str, ...]] = ("onnx", "int8", "fp16", "distill", "prune")

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

    # ------------------------------------------------------------ optimization (luodi optimize)
    def records_of(self, data: pd.DataFrame) -> list[dict[str, Any]]:
        """The prediction requests of a labelled table (its texts)."""
        return [{"text": t} for t in data.text.tolist()]

    def parameter_count(self) -> int:
        """Weights the model computes with: the ONNX graph's or the torch encoders', plus the linear heads'."""
        from luodi.ort import parameter_count

        n = 0 if self.tfidf_head is None else self.tfidf_head.coef.size + self.tfidf_head.intercept.size
        if self.onnx is not None:  # the graph holds the embedding head too
            return n + parameter_count(self.onnx.path)
        if self.emb_head is not None:
            n += self.emb_head.coef.size + self.emb_head.intercept.size
        if self.ft_model is not None:
            n += sum(p.numel() for m in self.ft_model.members for p in m.parameters())
        if self.emb_head is not None:
            n += sum(p.numel() for p in get_encoder(self.source).model.parameters())
        return n

    def optimize(
        self, method: str, run_dir: Path, score: Callable[[], float], calibration: pd.DataFrame, opts: Any,
        say: Callable[[str], None],
    ) -> dict[str, Any]:
        """Turn the neural heads of the run in run_dir (a copy of the base run) into ONNX: `onnx` float32,
        `int8` (layers kept in float32 until opts.max_quality_drop holds on the calibration rows; kept only
        where faster when opts.require_faster) or `fp16`. Rewrites the run's metadata; returns what was done."""
        from luodi.ort import quantize_int8, to_float16

        run_dir = Path(run_dir)
        meta = json.loads((run_dir / META).read_text())
        info: dict[str, Any] = {}
        if self.onnx is None:
            if self.ft_model is None and self.emb_head is None:
                raise ConfigError(
                    "this model has no neural head to optimize (model.options.features is [tfidf]): only the "
                    "encoder heads (finetune, embeddings) run as ONNX", param="model.options.features",
                )
            self._export_onnx(run_dir, meta, opts.threads)
            say(f"exported the neural heads to ONNX ({GRAPH}, float32)")
        runtime = meta["runtime"]
        if method == "onnx":
            return info
        if runtime["precision"] != "float32":
            raise ConfigError(
                f"--method {method} starts from a float32 model; this run is already {runtime['precision']}: "
                "optimize its base version instead (--version)", param="method",
            )
        fp32 = run_dir / runtime["graph"]
        target = run_dir / f"neural-{method}.onnx"
        if method == "fp16":
            to_float16(fp32, target)
            precision = "float16"
        else:
            base = score()
            texts = calibration.text.tolist()

            def drop(candidate: Path) -> float:
                self.onnx.swap(candidate)
                return base - score()

            info = quantize_int8(fp32, target, drop, opts.max_quality_drop, say)
            precision = "int8"
            ms32, ms8 = self._batch1_ms(fp32, texts), self._batch1_ms(target, texts)
            info["batch1_ms"] = {"float32": round(ms32, 3), "int8": round(ms8, 3)}
            if opts.require_faster and ms8 >= ms32:
                say(f"int8 is not faster here ({ms8:.2f} ms vs {ms32:.2f} ms float32 at batch 1): float32 kept")
                info["kept"] = "float32 (int8 measured slower at batch 1)"
                target.unlink()
                self.onnx.swap(fp32)
                return info
        fp32.unlink()
        runtime.update(graph=target.name, precision=precision)
        write_json(run_dir / META, meta)
        self.onnx = OnnxHeads(run_dir, target.name, self.opts.max_length, opts.threads)
        return info

    def distill(self, run_dir: Path, train: pd.DataFrame, opts: Any, say: Callable[[str], None]) -> dict[str, Any]:
        """Replace every head by one small fine-tuned encoder (optimize.distill.layers of the first fine-tuned
        member) trained on the whole model's predictions for the training split and its labels."""
        from luodi.tasks.text_finetune import FinetunedEnsemble, distill, member_weights

        if self.onnx is not None:
            raise ConfigError("--method distill starts from a torch run, this one is ONNX: distill its base "
                              "version (--version), then optimize the student", param="method")
        if self.ft_model is None:
            raise ConfigError("--method distill starts the student from a fine-tuned encoder: the app needs "
                              "model.options.features with finetune", param="model.options.features")
        run_dir = Path(run_dir)
        index = {lab: i for i, lab in enumerate(self.classes)}
        texts, y = train.text.tolist(), train.label.map(index).values
        say(f"teacher: the trained model's predictions on {len(texts)} training texts")
        teacher = self._log_probs(texts, progress=True)
        layers = opts.distill.layers
        say(f"student: layers {layers} of the first fine-tuned encoder, {opts.distill.epochs} epochs")
        student = distill(texts, y, teacher, self.ft_model.members[0], opts=self.opts, distill_opts=opts.distill,
                          run_dir=run_dir)
        for k in range(len(self.ft_model.members)):
            (run_dir / member_weights(k)).unlink(missing_ok=True)
        (run_dir / "tfidf_vocab.json").unlink(missing_ok=True)
        self.ft_model, self.emb_head, self.tfidf_head, self.tfidf = FinetunedEnsemble([student]), None, None, None
        self.opts = self.opts.model_copy(update={"features": ["finetune"], "head_weights": None, "finetune_seeds": 1,
                                                 "finetune_sources": {}, "encoder_layers": list(layers)})
        self.save(run_dir)  # (the student's checkpoints are removed when the optimized run is recorded)
        return {"student_layers": list(layers), "teacher_agreement_train": float(
            (student.log_proba(texts[:512], self.opts.max_length).argmax(1) == teacher[:512].argmax(1)).mean())}

    def prune(self, run_dir: Path, train: pd.DataFrame, opts: Any, say: Callable[[str], None]) -> dict[str, Any]:
        """Cut attention heads and feed-forward channels out of every fine-tuned member (optimize.prune), then
        fine-tune each again on the whole unpruned model's predictions and the labels (text_prune.py); heads
        not in optimize.prune.features are dropped."""
        from luodi.tasks.text_prune import prune_ensemble

        if self.onnx is not None:
            raise ConfigError("--method prune starts from a torch run, this one is ONNX: prune its base version "
                              "(--version), then optimize the pruned run", param="method")
        if self.ft_model is None:
            raise ConfigError("--method prune shrinks fine-tuned encoders: the app needs model.options.features "
                              "with finetune", param="model.options.features")
        if "finetune" not in opts.prune.features:
            raise ConfigError("optimize.prune.features must keep finetune (the heads it prunes)",
                              param="optimize.prune.features")
        run_dir = Path(run_dir)
        index = {lab: i for i, lab in enumerate(self.classes)}
        texts, y = train.text.tolist(), train.label.map(index).values
        say(f"teacher: the unpruned model's predictions on {len(texts)} training texts")
        teacher = self._log_probs(texts, progress=True)
        members = self.ft_model.members
        say(f"pruning {len(members)} fine-tuned member(s): {opts.prune.heads:.0%} of the attention heads, "
            f"{opts.prune.ffn:.0%} of the feed-forward channels ({opts.prune.importance})")
        shapes, info = prune_ensemble(members, texts, y, teacher, opts=self.opts, prune_opts=opts.prune,
                                      run_dir=run_dir, say=say, previous=self.opts.pruned)
        kept = [f for f in self.opts.features if f in opts.prune.features]
        if "embeddings" not in kept:
            self.emb_head = None
        if "tfidf" not in kept:
            self.tfidf_head = self.tfidf = None
            (run_dir / "tfidf_vocab.json").unlink(missing_ok=True)
        weights = self.opts.head_weights
        if weights is not None:
            weights = {h: w for h, w in weights.items() if h in kept}
        self.opts = TextClassificationOptions.model_validate(  # the shapes typed, as load reads them
            {**self.opts.model_dump(), "features": kept, "head_weights": weights, "pruned": shapes})
        self.save(run_dir)  # (the recovery's checkpoints are removed when the optimized run is recorded)
        sample = texts[:512]
        info["features"] = kept
        info["teacher_agreement_train"] = float(
            (self._log_probs(sample).argmax(1) == teacher[: len(sample)].argmax(1)).mean())
        return info

    def export_bundle(self, out: Path) -> dict[str, Any]:
        """Write a standalone bundle into `out`: model.onnx (the neural heads), tokenizer.json, labels.json (labels,
        head weights, out-of-scope rule) and predict.py (onnxruntime, numpy and tokenizers only)."""
        import shutil

        from luodi.tasks import bundles

        if self.tfidf_head is not None:
            raise ConfigError(
                "model.options.features has tfidf: TF-IDF's character n-grams have no ONNX operator, so a bundle "
                "could not reproduce the predictions; export an app with features [finetune] and / or [embeddings]",
                param="model.options.features",
            )
        self._require_fitted()
        out = Path(out)
        if self.onnx is None:  # not optimized yet: the float32 graph is exported into the bundle only
            self._export_onnx(out, {}, None)
            (out / META).unlink()
            (out / GRAPH).rename(out / "model.onnx")
        else:
            shutil.copy2(self.onnx.path, out / "model.onnx")
            shutil.copy2(self.onnx.path.parent / TOKENIZER, out / TOKENIZER)
        weights = self._mix_weights(self.onnx.outputs)
        write_json(out / "labels.json", {
            "labels": self.classes, "weights": weights, "max_length": self.opts.max_length,
            "oos_label": self.opts.oos_label, "oos_threshold": self.oos_threshold or 0.0,
        })
        shutil.copy2(Path(bundles.__file__).parent / "text_classification_predict.py", out / "predict.py")
        return {
            "inputs": "a text (string); python predict.py \"text\" ... or one text per line on stdin",
            "outputs": "{label, score}: the predicted label and its probability (1 - p for the out-of-scope label)",
            "labels": len(self.classes),
            "requires": "onnxruntime numpy tokenizers",
            "contents": "model.onnx (the neural heads), tokenizer.json, labels.json (labels, head weights, the "
            "out-of-scope rule), predict.py",
            "example": 'python predict.py "a text to classify"',
        }

    def _batch1_ms(self, graph: Path, texts: list[str]) -> float:
        """Median milliseconds of one text through `graph` (after a warm-up)."""
        self.onnx.swap(graph)
        sample = texts[:64]
        for t in sample[:8]:
            self.onnx.log_probs([t])
        times = []
        for t in sample:
            t0 = time.perf_counter()
            self.onnx.log_probs([t])
            times.append(time.perf_counter() - t0)
        return float(np.median(times) * 1000)

    def _export_onnx(self, run_dir: Path, meta: dict[str, Any], threads: int | None) -> None:
        """Write the float32 graph of the neural heads; the torch weights it replaces are removed from run_dir."""
        from luodi.tasks.onnx_text import NeuralHeads, export_heads
        from luodi.tasks.text_finetune import member_sources, member_weights

        if self.ft_model is not None and len(set(member_sources(self.opts, self.source))) > 1:
            raise ConfigError(
                "model.options.finetune_sources: members with other encoders (other tokenizers) cannot share one "
                "ONNX graph; optimize an app whose members all use model.source",
                param="model.options.finetune_sources",
            )
        encoder = get_encoder(self.source) if self.emb_head is not None else None
        members = self.ft_model.members if self.ft_model is not None else []
        tokenizer = members[0].tokenizer if members else encoder.tokenizer
        if "token_type_ids" not in tokenizer.model_input_names:
            raise ConfigError(
                f"model.source '{self.source}': ONNX export covers BERT-style encoders (MiniLM); this one is not",
                param="model.source",
            )
        emb = self.emb_head
        heads = NeuralHeads(members, encoder.model if encoder else None, self.opts.layers,
                            emb.coef if emb else None, emb.intercept if emb else None)
        names = export_heads(heads, tokenizer, run_dir, self.opts.max_length)
        for k in range(len(members)):
            (run_dir / member_weights(k)).unlink(missing_ok=True)
        meta["runtime"] = {"graph": GRAPH, "precision": "float32", "heads": names}
        write_json(run_dir / META, meta)
        self.ft_model = None
        self.onnx = OnnxHeads(run_dir, GRAPH, self.opts.max_length, threads)

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
        from safetensors.numpy import load_file

        run_dir = Path(run_dir)
        meta_path = run_dir / META
        if not meta_path.exists():
            raise BadRequest(f"{run_dir} holds no text-classification model (text_classification.json missing)")
        meta = json.loads(meta_path.read_text())
        t = load_file(str(run_dir / "model.safetensors"))
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
            vocab = json.loads((run_dir / "tfidf_vocab.json").read_text())
            idf = {k.split(".")[-1]: v for k, v in t.items() if k.startswith("tfidf.idf.")}
            self.tfidf = tfidf_from_state(vocab, idf)

    def input_model(self) -> type[BaseModel]:
        return TextIn

    def output_model(self) -> type[BaseModel]:
        return TextClassOut
