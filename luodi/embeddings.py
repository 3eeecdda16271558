"""Sentence embeddings from an encoder (default: the bundled all-MiniLM-L6-v2), mean-pooled and L2-normalized."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from luodi.models import load_quietly, resolve


class Encoder:
    """A transformers encoder with mean pooling; thread-safe, batched, CPU by default."""

    def __init__(self, spec: str = "bundled:minilm-l6", max_length: int = 256):
        import torch
        from transformers import AutoModel, AutoTokenizer

        src = resolve(spec)
        self.spec = spec
        self.name = src.name
        self.tokenizer = AutoTokenizer.from_pretrained(src.path)
        self.model = load_quietly(AutoModel.from_pretrained, src.path).eval()
        self.max_length = max_length
        self.dim = int(self.model.config.hidden_size)
        self._lock = threading.Lock()
        self._torch = torch

    def count_tokens(self, texts: Sequence[str]) -> int:
        return sum(len(self.tokenizer(t, truncation=True, max_length=self.max_length)["input_ids"]) for t in texts)

    def encode(self, texts: Sequence[str], batch_size: int = 64, normalize: bool = True,
               progress: bool = False) -> np.ndarray:
        """Return a float32 array of shape (len(texts), dim)."""
        torch = self._torch
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([len(t) for t in texts])  # sort by length: less padding
        steps = range(0, len(texts), batch_size)
        if progress:
            from rich.progress import track

            steps = track(steps, description="embedding")
        with self._lock, torch.inference_mode():
            for start in steps:
                idx = order[start : start + batch_size]
                batch = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt")
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                if normalize:
                    vec = torch.nn.functional.normalize(vec, dim=-1)
                out[idx] = vec.float().numpy()
        return out


@lru_cache(maxsize=4)
def get_encoder(spec: str = "bundled:minilm-l6") -> Encoder:
    """One shared encoder per source per process."""
    return Encoder(spec)
