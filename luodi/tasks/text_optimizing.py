"""`luodi optimize` and `luodi export` for text classification (a mixin of TextClassificationTask): the neural heads
as one ONNX graph (float32, int8 with the float32 fallback by weight role, float16), a distilled student, pruned
encoders, and the standalone bundle. Each method rewrites the run folder it is given (a copy of the base run)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from luodi import crypto
from luodi.atomic import write_json
from luodi.embeddings import get_encoder
from luodi.errors import ConfigError
from luodi.options import TextClassificationOptions
from luodi.tasks.onnx_text import GRAPH, TOKENIZER, OnnxHeads

META = "text_classification.json"


class TextOptimizing:
    """records_of / parameter_count / optimize / distill / prune / export_bundle of TextClassificationTask (its
    state is declared there: classes, opts, source, heads, onnx)."""

    optimize_methods: ClassVar[tuple[str, ...]] = ("onnx", "int8", "fp16", "distill", "prune")
    classes: list[str]
    opts: Any
    source: str
    ft_model: Any
    emb_head: Any
    tfidf_head: Any
    tfidf: Any
    onnx: OnnxHeads | None
    oos_threshold: float | None

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
        from luodi.ort import int8_if_faster, to_float16

        run_dir = Path(run_dir)
        meta = crypto.read_json(run_dir / META)
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
            texts = calibration.text.tolist()
            info = int8_if_faster(fp32, target, self.onnx.swap, score, lambda g: self._batch1_ms(g, texts), opts, say)
            if "kept" in info:
                return info
            precision = "int8"
        fp32.unlink()
        runtime.update(graph=target.name, precision=precision)
        write_json(run_dir / META, meta)
        self.onnx = OnnxHeads(run_dir, target.name, self.opts.max_length, opts.threads)
        return info

    def _teacher(self, method: str, train: pd.DataFrame, say: Callable[[str], None]) -> tuple[list, np.ndarray, Any]:
        """The training texts, their label indices and the whole trained model's log-probabilities for them: what
        distill's student and prune's recovery learn from. Both start from the torch fine-tuned members."""
        if self.onnx is not None:
            raise ConfigError(f"--method {method} starts from a torch run, this one is ONNX: {method} its base "
                              "version (--version), then optimize the result", param="method")
        if self.ft_model is None:
            raise ConfigError(f"--method {method} works on fine-tuned encoders: the app needs "
                              "model.options.features with finetune", param="model.options.features")
        index = {lab: i for i, lab in enumerate(self.classes)}
        texts, y = train.text.tolist(), train.label.map(index).values
        say(f"teacher: the trained model's predictions on {len(texts)} training texts")
        return texts, y, self._log_probs(texts, progress=True)

    def distill(self, run_dir: Path, train: pd.DataFrame, opts: Any, say: Callable[[str], None]) -> dict[str, Any]:
        """Replace every head by one small fine-tuned encoder (optimize.distill.layers of the first fine-tuned
        member, optimize.distill.heads / ffn of their heads / channels cut) trained on the whole model's
        predictions for the training split and its labels."""
        from luodi.tasks.text_finetune import FinetunedEnsemble, distill, member_weights

        run_dir = Path(run_dir)
        texts, y, teacher = self._teacher("distill", train, say)
        d = opts.distill
        say(f"student: layers {d.layers} of the first fine-tuned encoder, {d.heads:.0%} of their attention heads "
            f"and {d.ffn:.0%} of their feed-forward channels cut, {d.epochs} epochs")
        student, shape = distill(texts, y, teacher, self.ft_model.members[0], opts=self.opts, distill_opts=d,
                                 run_dir=run_dir, previous=self.opts.pruned[0] if self.opts.pruned else None)
        for k in range(len(self.ft_model.members)):
            (run_dir / member_weights(k)).unlink(missing_ok=True)
        (run_dir / "tfidf_vocab.json").unlink(missing_ok=True)
        self.ft_model, self.emb_head, self.tfidf_head, self.tfidf = FinetunedEnsemble([student]), None, None, None
        before = self.opts.encoder_layers  # a student distilled again: its layers named in the whole encoder
        layers = [before[i] for i in d.layers] if before else list(d.layers)
        self.opts = TextClassificationOptions.model_validate({  # the shapes typed, as load reads them
            **self.opts.model_dump(), "features": ["finetune"], "head_weights": None, "finetune_seeds": 1,
            "finetune_sources": {}, "encoder_layers": layers, "pruned": [shape] if shape else None})
        self.save(run_dir)  # (the student's checkpoints are removed when the optimized run is recorded)
        info: dict[str, Any] = {"student_layers": layers}
        if shape:
            info.update(heads_kept=[len(h) for h in shape["heads"]], ffn_widths=shape["ffn"])
        info["teacher_agreement_train"] = float(
            (student.log_proba(texts[:512], self.opts.max_length).argmax(1) == teacher[:512].argmax(1)).mean())
        return info

    def prune(self, run_dir: Path, train: pd.DataFrame, opts: Any, say: Callable[[str], None]) -> dict[str, Any]:
        """Cut attention heads and feed-forward channels out of every fine-tuned member (optimize.prune), then
        fine-tune each again on the whole unpruned model's predictions and the labels (text_prune.py); heads
        not in optimize.prune.features are dropped."""
        from luodi.tasks.text_finetune import learn_from_teacher
        from luodi.tasks.text_prune import prune_ensemble

        if "finetune" not in opts.prune.features:
            raise ConfigError("optimize.prune.features must keep finetune (the heads it prunes)",
                              param="optimize.prune.features")
        run_dir = Path(run_dir)
        texts, y, teacher = self._teacher("prune", train, say)
        members = self.ft_model.members
        say(f"pruning {len(members)} fine-tuned member(s): {opts.prune.heads:.0%} of the attention heads, "
            f"{opts.prune.ffn:.0%} of the feed-forward channels ({opts.prune.importance})")
        shapes, info = prune_ensemble(members, texts, y, teacher, opts=self.opts, prune_opts=opts.prune,
                                      run_dir=run_dir, recover=learn_from_teacher, say=say,
                                      previous=self.opts.pruned)
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
            # (a bundle runs without luodi: the run's files are copied as plaintext even when stored encrypted)
            (out / "model.onnx").write_bytes(crypto.read_bytes(self.onnx.path))
            (out / TOKENIZER).write_bytes(crypto.read_bytes(self.onnx.path.parent / TOKENIZER))
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
