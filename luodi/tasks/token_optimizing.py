"""`luodi optimize` for token classification (a mixin of TokenClassificationTask). The tagger is small; the frozen
encoder under it does nearly all the work (the MiniLM layers whose first-sub-word states the tagger reads). So the
methods put that encoder into the run as an ONNX graph that outputs exactly those layers: `onnx` (float32) and
`int8` (dynamic, with the float32 fallback by weight role while the entity F1 on calibration sentences drops more
than optimize.max_quality_drop; kept only where measured faster at batch 1). PII detection reads names with the
NER app's served run, so promoting an int8 run speeds `luodi pii` and `guard.pii` too."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from luodi import crypto
from luodi.atomic import atomic_path, write_json
from luodi.embeddings import get_encoder
from luodi.errors import ConfigError
from luodi.ort import TOKEN_INPUTS, SizedSession, fold_weight_identities
from luodi.tasks.bio_tags import WORD_RE

META = "token_classification.json"
GRAPH = "encoder.onnx"


class OnnxLayerFeatures:
    """`forward` for Encoder.word_features: a tokenized batch -> the chosen layers, (b, seq, layers, dim)."""

    def __init__(self, path: Path, threads: int | None = None):
        self.path, self.threads = Path(path), threads
        self.session = SizedSession(self.path, threads)

    def swap(self, path: Path) -> None:
        self.__init__(path, self.threads)

    def __call__(self, batch: Any) -> np.ndarray:
        feed = {k: batch[k].numpy() for k in TOKEN_INPUTS if k in batch}
        return self.session.run(["features"], feed)[0]


def _layers_module(model: Any, layers: list[int]) -> Any:
    import torch

    class Layers(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                                output_hidden_states=True).hidden_states
            return torch.stack([hidden[i] for i in layers], dim=2)

    return Layers().eval()


def export_layers(source: str, layers: list[int], path: Path) -> None:
    """The encoder of `source` as an ONNX graph from token ids to the stacked `layers` (dynamic batch, sequence)."""
    import torch

    enc = get_encoder(source)
    sample = enc.tokenizer([["a", "sample"], ["of", "two", "sentences"]], is_split_into_words=True, padding=True,
                           return_tensors="pt")
    args = tuple(sample.get(k, torch.zeros_like(sample["input_ids"])) for k in TOKEN_INPUTS)
    axes = {k: {0: "batch", 1: "sequence"} for k in TOKEN_INPUTS} | {"features": {0: "batch", 1: "sequence"}}
    with atomic_path(path, suffix=".onnx") as tmp, torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shape checks that the dynamic axes make general
        torch.onnx.export(_layers_module(enc.model, list(layers)), args, str(tmp), input_names=list(TOKEN_INPUTS),
                          output_names=["features"], dynamic_axes=axes, opset_version=17, dynamo=False)
    fold_weight_identities(path)


def export_tagger(net: Any, dim: int, path: Path) -> None:
    """The trained tagger as an ONNX graph: encoder features (b, words, layers, dim), character ids (b, words,
    chars) and casing classes (b, words) -> log-probabilities of the tags (b, words, tags); every axis but the
    feature axes dynamic."""
    import torch

    class LogProbs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, features, chars, case):
            return torch.log_softmax(self.net(features, chars, case), -1)

    args = (torch.zeros(2, 3, len(net.mix), dim), torch.ones(2, 3, 4, dtype=torch.long),
            torch.zeros(2, 3, dtype=torch.long))
    axes = {"features": {0: "batch", 1: "words"}, "chars": {0: "batch", 1: "words", 2: "chars"},
            "case": {0: "batch", 1: "words"}, "log_probs": {0: "batch", 1: "words"}}
    net.eval()
    with atomic_path(path, suffix=".onnx") as tmp, torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shape checks that the dynamic axes make general
        torch.onnx.export(LogProbs().eval(), args, str(tmp), input_names=["features", "chars", "case"],
                          output_names=["log_probs"], dynamic_axes=axes, opset_version=17, dynamo=False)


class TokenOptimizing:
    """records_of / parameter_count / optimize of TokenClassificationTask (its state is declared there)."""

    optimize_methods: ClassVar[tuple[str, ...]] = ("onnx", "int8")
    opts: Any
    source: str
    net: Any
    dim: int
    tags: list[str]
    chars: dict[str, int]
    features: OnnxLayerFeatures | None
    predict_texts: Callable[..., list[dict[str, Any]]]

    def records_of(self, data: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The prediction requests of labelled sentences: their words joined by spaces."""
        return [{"text": " ".join(s["tokens"])} for s in data]

    def parameter_count(self) -> int:
        """The tagger's weights plus the encoder's (its ONNX graph's when the run has one)."""
        from luodi.ort import parameter_count

        n = sum(p.numel() for p in self.net.parameters())
        if self.features is not None:
            return n + parameter_count(self.features.path)
        return n + sum(p.numel() for p in get_encoder(self.source).model.parameters())

    def outside_model_bytes(self) -> int:
        """The bundled encoder's float32 weights, which a torch run reads from outside its folder."""
        if self.features is not None:
            return 0
        return sum(p.numel() * p.element_size() for p in get_encoder(self.source).model.parameters())

    def optimize(
        self, method: str, run_dir: Path, score: Callable[[], float], calibration: list[dict[str, Any]], opts: Any,
        say: Callable[[str], None],
    ) -> dict[str, Any]:
        """Put the encoder into the run in run_dir (a copy of the base run) as ONNX: `onnx` float32, `int8`
        (roles kept in float32 until opts.max_quality_drop holds; kept only where faster when opts.require_faster)."""
        from luodi.ort import int8_if_faster

        run_dir = Path(run_dir)
        meta = crypto.read_json(run_dir / META)
        info: dict[str, Any] = {}
        if self.features is None:
            export_layers(self.source, self.opts.layers, run_dir / GRAPH)
            meta["encoder_runtime"] = {"graph": GRAPH, "precision": "float32"}
            write_json(run_dir / META, meta)
            self.features = OnnxLayerFeatures(run_dir / GRAPH, opts.threads)
            say(f"exported the encoder's layers {self.opts.layers} to ONNX ({GRAPH}, float32)")
        runtime = meta["encoder_runtime"]
        if method == "onnx":
            return info
        if runtime["precision"] != "float32":
            raise ConfigError(f"--method {method} starts from a float32 encoder; this run's is already "
                              f"{runtime['precision']}: optimize its base version instead (--version)", param="method")
        fp32, target = run_dir / runtime["graph"], run_dir / "encoder-int8.onnx"
        texts = [" ".join(s["tokens"]) for s in calibration[:64]]
        info = int8_if_faster(fp32, target, self.features.swap, score, lambda g: self._batch1_ms(g, texts), opts, say)
        if "kept" in info:
            return info
        fp32.unlink()
        runtime.update(graph=target.name, precision="int8")
        write_json(run_dir / META, meta)
        self.features.swap(target)
        return info

    def export_bundle(self, out: Path) -> dict[str, Any]:
        """Write a standalone bundle into `out`: encoder.onnx (the frozen encoder's layers the tagger reads; the
        run's int8 graph when it has one), tagger.onnx (the trained tagger, log-probabilities of the tags),
        tokenizer.json, tags.json (tags, character vocabulary, word pattern, max_length) and predict.py
        (onnxruntime, numpy and tokenizers). The bundle answers like luodi answers one text per request: the
        tagger's character and context convolutions see one sentence, unpadded."""
        import shutil

        from tokenizers import Tokenizer

        from luodi.tasks import bundles

        if self.net is None:
            raise ConfigError("nothing to export: the model is not trained", param="app")
        tokenizer = get_encoder(self.source).tokenizer
        if "token_type_ids" not in tokenizer.model_input_names:
            raise ConfigError(f"model.source '{self.source}': bundles cover BERT-style encoders (MiniLM); this one "
                              "is not", param="model.source")
        out = Path(out)
        if self.features is not None:  # (plaintext: a bundle runs without luodi)
            (out / GRAPH).write_bytes(crypto.read_bytes(self.features.path))
        else:
            export_layers(self.source, self.opts.layers, out / GRAPH)
        words = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())  # as luodi tokenizes: truncated, unpadded
        words.no_padding()
        words.enable_truncation(self.opts.max_length)
        words.save(str(out / "tokenizer.json"))
        export_tagger(self.net, self.dim, out / "tagger.onnx")
        write_json(out / "tags.json", {"tags": self.tags, "chars": self.chars, "max_length": self.opts.max_length,
                                       "word_pattern": WORD_RE.pattern})
        shutil.copy2(Path(bundles.__file__).parent / "token_classification_predict.py", out / "predict.py")
        kinds = sorted({t[2:] for t in self.tags if t != "O"})
        return {
            "inputs": "a text (string); python predict.py \"text\" ... or one text per line on stdin",
            "outputs": "{entities: [{text, label, start, end, score}]}: entity spans with character offsets and the "
            f"mean probability of their tags (labels: {', '.join(kinds)})",
            "labels": len(kinds),
            "requires": "onnxruntime numpy tokenizers",
            "contents": f"{GRAPH} (the encoder's layers {list(self.opts.layers)}), tagger.onnx (the tagger), "
            "tokenizer.json, tags.json (tags, characters, word pattern), predict.py",
            "example": 'python predict.py "Anna moved from Paris to Berlin."',
        }

    def _batch1_ms(self, graph: Path, texts: list[str]) -> float:
        """Median milliseconds of one text's entities with `graph` as the encoder (after a warm-up)."""
        self.features.swap(graph)
        for t in texts[:8]:
            self.predict_texts([t], cache=False)
        times = []
        for t in texts:
            t0 = time.perf_counter()
            self.predict_texts([t], cache=False)
            times.append(time.perf_counter() - t0)
        return float(np.median(times) * 1000)
