"""A text classifier's neural heads as one ONNX graph, and running it with ONNX Runtime and `tokenizers` only.

The graph takes the tokenizer's ids (input_ids, attention_mask, token_type_ids; batch and sequence axes dynamic)
and gives each neural head's log-probabilities: `finetune` (the fine-tuned members averaged, as
text_finetune.FinetunedEnsemble does) and `embeddings` (the frozen encoder's mean-pooled layers through the
logistic head). What is left outside (TF-IDF, mixing, the out-of-scope threshold) stays in Python. The same
graph, tokenizer.json and a label list are what `luodi export` ships, so an exported bundle predicts like luodi.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from luodi import crypto
from luodi.atomic import atomic_path
from luodi.ort import TOKEN_INPUTS, SizedSession, fold_weight_identities, run_tokenized

GRAPH = "neural.onnx"
TOKENIZER = "tokenizer.json"
INPUTS = TOKEN_INPUTS


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


class NeuralHeads(nn.Module):
    """The neural heads of a text classifier in one module, for torch.onnx.export."""

    def __init__(self, members: list[Any], encoder: Any | None, layers: list[int], coef=None, intercept=None):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.encoder = encoder
        self.layers = list(layers)
        if encoder is not None:
            coef = torch.as_tensor(np.asarray(coef, np.float32))
            intercept = torch.as_tensor(np.asarray(intercept, np.float32))
            if coef.shape[0] == 1:  # binary: scikit-learn keeps the positive row only
                coef, intercept = torch.cat([torch.zeros_like(coef), coef]), torch.cat([intercept * 0, intercept])
            self.register_buffer("coef", coef)
            self.register_buffer("intercept", intercept)

    def names(self) -> list[str]:
        return (["finetune"] if len(self.members) else []) + (["embeddings"] if self.encoder is not None else [])

    def forward(self, input_ids, attention_mask, token_type_ids):
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        out = []
        if len(self.members):
            lp = torch.stack([F.log_softmax(m(batch), -1) for m in self.members]).mean(0)
            out.append(lp - torch.logsumexp(lp, -1, keepdim=True))
        if self.encoder is not None:
            hidden = self.encoder(**batch, output_hidden_states=True).hidden_states
            feats = torch.cat([F.normalize(_mean_pool(hidden[i], attention_mask), dim=-1) for i in self.layers], -1)
            out.append(F.log_softmax(feats @ self.coef.T + self.intercept, -1))
        return tuple(out)


def export_heads(heads: NeuralHeads, tokenizer: Any, run_dir: Path, max_length: int) -> list[str]:
    """Write GRAPH and TOKENIZER into run_dir; returns the head names (the graph's outputs)."""
    names = heads.names()
    sample = tokenizer(["a short example", "and a second, longer example text"], padding=True,
                       truncation=True, max_length=max_length, return_tensors="pt")
    args = tuple(sample.get(k, torch.zeros_like(sample["input_ids"])) for k in INPUTS)
    axes = {k: {0: "batch", 1: "sequence"} for k in INPUTS} | {n: {0: "batch"} for n in names}
    heads.eval()
    with atomic_path(Path(run_dir) / GRAPH, suffix=".onnx") as tmp, torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shape checks that dynamic axes make general
        torch.onnx.export(heads, args, str(tmp), input_names=list(INPUTS), output_names=names,
                          dynamic_axes=axes, opset_version=17, dynamo=False)
    fold_weight_identities(Path(run_dir) / GRAPH)
    with atomic_path(Path(run_dir) / TOKENIZER, suffix=".json") as tmp:
        tokenizer.backend_tokenizer.save(str(tmp))
    return names


class OnnxHeads:
    """The exported graph run by ONNX Runtime on `tokenizers` ids: `log_probs(texts)` -> {head: (n, k)}."""

    def __init__(self, run_dir: Path, graph: str, max_length: int, threads: int | None = None):
        from tokenizers import Tokenizer

        self.path = Path(run_dir) / graph
        self.session = SizedSession(self.path, threads)
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.tokenizer = Tokenizer.from_str(crypto.read_text(Path(run_dir) / TOKENIZER))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length)

    def swap(self, path: Path) -> None:
        """Run another graph with the same inputs and outputs (a quantization candidate)."""
        self.path, self.session = Path(path), SizedSession(path, self.session.threads)

    def log_probs(self, texts: list[str], batch_size: int = 64) -> dict[str, np.ndarray]:
        values = run_tokenized(self.session, self.tokenizer.encode_batch(list(texts)), self.outputs, batch_size)
        return dict(zip(self.outputs, values, strict=True)) if values else {}
