"""Sentence embeddings from an encoder (default: the bundled all-MiniLM-L6-v2), mean-pooled and L2-normalized.

`Encoder.run` is the one batch loop over the encoder (length-sorted batches under the model's lock); the
embeddings of `encode`, the per-layer text features of text classification and the per-word features of
token classification are its poolings, the latter two cached on disk by content (`cached_features`).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from luodi.atomic import atomic_path
from luodi.errors import ConfigError
from luodi.models import load_quietly, resolve
from luodi.settings import get_settings

_MEMO: dict[str, np.ndarray] = {}  # the few most recent cached feature sets (train, validation), in memory


def cached_features(kind: str, key: Any, compute: Callable[[], np.ndarray], memo: bool = False) -> np.ndarray:
    """`compute()`'s array, stored once under the cache dir as <kind>/<hash of key>.npy (and kept in memory
    for the next calls when `memo`): features of the same texts with the same settings are computed once."""
    name = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:32]
    path = get_settings().cache_dir / kind / f"{name}.npy"
    if f"{kind}/{name}" in _MEMO:
        return _MEMO[f"{kind}/{name}"]
    if path.exists():
        out = np.load(path)
    else:
        out = compute()
        with atomic_path(path, suffix=".npy") as tmp:
            np.save(tmp, out)
    if memo:
        _MEMO[f"{kind}/{name}"] = out
        while len(_MEMO) > 3:
            _MEMO.pop(next(iter(_MEMO)))
    return out


class Encoder:
    """A transformers encoder with mean pooling; thread-safe, batched, CPU by default."""

    def __init__(self, spec: str = "bundled:minilm-l6", max_length: int = 256, runtime: str | None = None):
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
        self.runtime = runtime or get_settings().embed_runtime
        self.onnx = None  # encode() on ONNX Runtime (LUODI_EMBED_RUNTIME); the layer features stay on torch
        if self.runtime != "torch":
            from luodi.encoder_onnx import onnx_encoder

            self.onnx = onnx_encoder(self.model, self.tokenizer, src.path, self.runtime, max_length,
                                     get_settings().cache_dir)

    def count_tokens(self, texts: Sequence[str]) -> int:
        return sum(len(self.tokenizer(t, truncation=True, max_length=self.max_length)["input_ids"]) for t in texts)

    def check_layers(self, layers: Sequence[int]) -> None:
        n = self.model.config.num_hidden_layers
        bad = [layer for layer in layers if not 0 <= layer <= n]
        if bad:
            raise ConfigError(
                f"model.options.layers {bad}: the encoder has layers 0..{n}", param="model.options.layers"
            )

    def run(
        self,
        inputs: Sequence[Any],
        *,
        batch_size: int,
        max_length: int,
        all_layers: bool = False,
        words: bool = False,
        progress: bool = False,
        description: str = "encoding",
        forward: Callable[[Any], Any] | None = None,
    ) -> Iterator[tuple[np.ndarray, Any, Any]]:
        """Yield (indices into `inputs`, tokenized batch, hidden states) per batch of similar lengths: the last
        layer's (b, seq, dim), or with `all_layers` every layer's tuple. `words`: inputs are lists of words.
        `forward(batch)`: computes what is yielded instead of the torch model (an ONNX graph of the encoder)."""
        torch = self._torch
        if not len(inputs):
            return
        # similar sub-word lengths together: less padding (word or character counts miss long tokens: an IBAN,
        # an e-mail address or an IPv6 address is one word but many sub-words)
        ids = self.tokenizer(list(inputs), is_split_into_words=words, truncation=True, max_length=max_length)
        order = np.argsort([len(x) for x in ids["input_ids"]], kind="stable")
        steps = range(0, len(inputs), batch_size)
        if progress:
            from rich.progress import track

            steps = track(steps, description=description)
        with self._lock, torch.inference_mode():
            for start in steps:
                idx = order[start : start + batch_size]
                batch = self.tokenizer(
                    [inputs[i] for i in idx],
                    is_split_into_words=words,
                    padding=True,
                    truncation=True,
                    max_length=max_length,
                    return_tensors="pt",
                )
                if forward is not None:
                    yield idx, batch, forward(batch)
                    continue
                out = self.model(**batch, output_hidden_states=all_layers)
                yield idx, batch, out.hidden_states if all_layers else out.last_hidden_state

    def _mean(self, hidden: Any, batch: Any, normalize: bool) -> Any:
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return self._torch.nn.functional.normalize(vec, dim=-1) if normalize else vec

    def encode(
        self, texts: Sequence[str], batch_size: int = 64, normalize: bool = True, progress: bool = False
    ) -> np.ndarray:
        """Return a float32 array of shape (len(texts), dim)."""
        texts = list(texts)
        if self.onnx is not None:
            vecs = self.onnx.encode(texts, batch_size) if texts else np.zeros((0, self.dim), np.float32)
            if normalize and len(vecs):
                vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
            return vecs
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        steps = self.run(
            texts, batch_size=batch_size, max_length=self.max_length, progress=progress, description="embedding"
        )
        for idx, batch, hidden in steps:
            out[idx] = self._mean(hidden, batch, normalize).float().numpy()
        return out

    def layer_features(
        self,
        texts: list[str],
        layers: list[int],
        max_length: int,
        progress: bool = False,
        batch_size: int = 64,
        cache: bool = True,
    ) -> np.ndarray:
        """Mean-pooled, L2-normalized hidden states of `layers`, concatenated: (n, len(layers) * dim); cached on
        disk (`cache=False`: computed and kept nowhere, for the texts of prediction requests)."""

        def compute() -> np.ndarray:
            self.check_layers(layers)
            out = np.zeros((len(texts), len(layers), self.dim), dtype=np.float32)
            steps = self.run(
                texts,
                batch_size=batch_size,
                max_length=max_length,
                all_layers=True,
                progress=progress,
                description="encoding texts",
            )
            for idx, batch, hidden in steps:
                for j, layer in enumerate(layers):
                    out[idx, j] = self._mean(hidden[layer], batch, True).numpy()
            return out.reshape(len(texts), -1)

        if not cache:
            return compute()
        return cached_features("text-features", [self.spec, layers, max_length, texts], compute)

    def word_features(
        self,
        sentences: list[list[str]],
        layers: list[int],
        max_length: int,
        progress: bool = False,
        batch_size: int = 32,
        cache: bool = True,
        forward: Callable[[Any], np.ndarray] | None = None,
    ) -> list[np.ndarray]:
        """First-sub-word hidden states of `layers` for every (lower-cased) word: float16 (n_words, len(layers),
        dim) per sentence; cached on disk and, for the few latest sets, in memory (`cache=False`: computed and
        kept nowhere, for texts that must not be stored, e.g. PII detection). `forward(batch)`: an ONNX graph
        that gives those layers stacked, (b, seq, len(layers), dim), in place of the torch model; never cached."""
        lengths = [len(s) for s in sentences]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

        def compute() -> np.ndarray:
            self.check_layers(layers)
            flat = np.zeros((int(offsets[-1]), len(layers), self.dim), dtype=np.float16)
            lowered = [[w.lower() for w in s] for s in sentences]
            steps = self.run(
                lowered,
                batch_size=batch_size,
                max_length=max_length,
                all_layers=True,
                words=True,
                progress=progress,
                description="encoding sentences",
                forward=forward,
            )
            for idx, batch, hidden in steps:
                stack = hidden if forward is not None else self._torch.stack([hidden[la] for la in layers], dim=2)
                stack = np.asarray(stack)  # (b, seq, L, dim)
                for b, i in enumerate(idx):
                    seen = set()
                    for pos, w in enumerate(batch.word_ids(b)):
                        if w is not None and w not in seen:
                            seen.add(w)
                            flat[offsets[i] + w] = stack[b, pos]
            return flat

        if not cache or forward is not None:
            flat = compute()
        else:
            flat = cached_features("word-features", [self.spec, layers, max_length, sentences], compute, memo=True)
        return [flat[offsets[i] : offsets[i + 1]] for i in range(len(sentences))]


@lru_cache(maxsize=4)
def get_encoder(spec: str = "bundled:minilm-l6", runtime: str | None = None) -> Encoder:
    """One shared encoder per source (and runtime) per process."""
    return Encoder(spec, runtime=runtime)
