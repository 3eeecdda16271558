"""Sentence embeddings on ONNX Runtime (LUODI_EMBED_RUNTIME=onnx | onnx-int8): the encoder exported once with
its mean pooling, cached under the cache dir, and run on the `tokenizers` ids.

int8 keeps weight roles in float32 (luodi.ort.quantize_int8) until the check sentences' embeddings have a mean cosine
>= MIN_COSINE to the float32 ones (quantized MiniLM-class encoders lose most on very short texts); if nothing
meets it the float32 graph is used and the reason is logged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from luodi.atomic import atomic_path, write_json
from luodi.ort import SizedSession, fold_weight_identities, quantize_int8, run_tokenized

MIN_COSINE = 0.99
CHECK_TEXTS = [
    "How do I reset my password?",
    "The quarterly report shows revenue grew by 12 percent compared with last year.",
    "Where is my card? I ordered it two weeks ago and it still has not arrived.",
    "Patients with a fever above 39 degrees should see a doctor within a day.",
    "The train to Berlin leaves from platform 4 at 7:15.",
    "I would like to cancel my subscription and get a refund for this month.",
    "Neural networks learn representations from data by gradient descent.",
    "ok",
]
log = logging.getLogger(__name__)


def _pooled_module(model: Any) -> Any:
    import torch

    class Pooled(torch.nn.Module):
        """Encoder + attention-masked mean pooling (normalization stays outside: encode(normalize=False))."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask,
                                token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    return Pooled().eval()


def _export(model: Any, tokenizer: Any, path: Path) -> None:
    import torch

    sample = tokenizer(CHECK_TEXTS[:2], padding=True, return_tensors="pt")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    args = tuple(sample.get(k, torch.zeros_like(sample["input_ids"])) for k in names)
    with atomic_path(path, suffix=".onnx") as tmp, torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shape checks that the dynamic axes make general
        torch.onnx.export(_pooled_module(model), args, str(tmp), input_names=names, output_names=["pooled"],
                          dynamic_axes={k: {0: "batch", 1: "sequence"} for k in names} | {"pooled": {0: "batch"}},
                          opset_version=17, dynamo=False)
    fold_weight_identities(path)


class OnnxEncoder:
    """`encode(texts, batch_size)` -> mean-pooled (n, dim) float32, as Encoder's torch path computes it."""

    def __init__(self, path: Path, tokenizer_file: Path, max_length: int):
        from tokenizers import Tokenizer

        self.path = path
        self.session = SizedSession(path)
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length)

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        values = run_tokenized(self.session, self.tokenizer.encode_batch(list(texts)), ["pooled"], batch_size)
        return values[0] if values else np.zeros((0, 0), np.float32)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def onnx_encoder(
    model: Any, tokenizer: Any, source_path: str, runtime: str, max_length: int, cache: Path
) -> OnnxEncoder:
    """The cached ONNX graph of `model` for `runtime` (onnx: float32; onnx-int8: int8 when it keeps MIN_COSINE)."""
    digest = hashlib.sha256(f"{Path(source_path).resolve()}|{max_length}".encode()).hexdigest()[:12]
    folder = cache / "onnx-encoders" / digest
    fp32, int8, tok = folder / "encoder.onnx", folder / "encoder-int8.onnx", folder / "tokenizer.json"
    if not fp32.exists():
        folder.mkdir(parents=True, exist_ok=True)
        _export(model, tokenizer, fp32)
    if not tok.exists():
        with atomic_path(tok, suffix=".json") as tmp:
            tokenizer.backend_tokenizer.save(str(tmp))
    float32 = OnnxEncoder(fp32, tok, max_length)
    if runtime != "onnx-int8":
        return float32
    verdict = folder / "int8.json"
    if not verdict.exists():
        want = float32.encode(CHECK_TEXTS)

        def drop(candidate: Path) -> float:  # 0 when the mean cosine keeps MIN_COSINE, else the shortfall
            got = OnnxEncoder(candidate, tok, max_length).encode(CHECK_TEXTS)
            return float(max(0.0, MIN_COSINE - _cosines(want, got).mean()))

        result = quantize_int8(fp32, int8, drop, 0.0)
        got = OnnxEncoder(int8, tok, max_length).encode(CHECK_TEXTS)
        cos = _cosines(want, got)
        write_json(verdict, {**result, "mean_cosine": round(float(cos.mean()), 5),
                             "min_cosine": round(float(cos.min()), 5)})
    decision = json.loads(verdict.read_text())
    if not decision["met"]:
        log.warning("int8 encoder below mean cosine %s to float32 (%s): float32 ONNX used", MIN_COSINE,
                    decision["mean_cosine"])
        return float32
    return OnnxEncoder(int8, tok, max_length)
