"""A LoRA text-generation run as one GGUF, so the llama.cpp engine (continuous batching) can serve it.

The adapter is merged into the base weights (peft `merge_and_unload`) and the merged linear layers replace their
tensors in a copy of the base GGUF: every other tensor (embeddings, norms) and all metadata (hyper-parameters,
tokenizer, chat template) are copied byte for byte, so the served model tokenizes and templates exactly as the
bundled one. Held-out reply-token perplexity is scored on the very same token ids by transformers and llama.cpp.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from luodi.atomic import atomic_path
from luodi.errors import ConfigError

WEIGHTS = ("q8_0", "f16")  # formats of the merged layers: q8_0 first (smaller, faster batches), f16 if it drifts


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF -> GGUF row order of llama's q / k projections (llama.cpp's convert_hf_to_gguf `permute`)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _field(reader: Any, key: str) -> Any:
    f = reader.fields.get(key)
    return None if f is None else f.contents()


def write_merged_gguf(base_gguf: str | Path, merged: dict[str, Any], out: str | Path, weights: str = "q8_0"
                      ) -> dict[str, Any]:
    """Write `out`: the base GGUF with the tensors of `merged` (HF names -> float tensors) in `weights` format.

    Returns what was replaced. Raises ConfigError when a merged tensor has no GGUF counterpart (another
    architecture's names), rather than serving a model that silently ignores the adapter.
    """
    import gguf

    if weights not in WEIGHTS:
        raise ConfigError(f"merged GGUF weights must be one of {', '.join(WEIGHTS)}, not '{weights}'",
                          param="weights")
    reader = gguf.GGUFReader(str(base_gguf))
    arch = str(_field(reader, "general.architecture"))
    arch_ids = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}
    if arch not in arch_ids:
        raise ConfigError(f"GGUF architecture '{arch}' is unknown to the gguf package", param="model.source")
    n_blocks = int(_field(reader, f"{arch}.block_count"))
    n_head = int(_field(reader, f"{arch}.attention.head_count"))
    n_head_kv = int(_field(reader, f"{arch}.attention.head_count_kv") or n_head)
    names = gguf.get_tensor_name_map(arch_ids[arch], n_blocks)
    base_names = {t.name for t in reader.tensors}
    replaced: dict[str, np.ndarray] = {}
    for hf_name, tensor in merged.items():
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None or name not in base_names:
            raise ConfigError(f"merged weight '{hf_name}' has no tensor in the base GGUF ({arch})",
                              param="model.source")
        w = tensor.detach().float().cpu().numpy()
        if arch == "llama" and name.endswith(("attn_q.weight", "attn_k.weight")):
            w = _permute(w, n_head if "attn_q" in name else n_head_kv)
        replaced[name] = w
    qtype = gguf.GGMLQuantizationType.Q8_0 if weights == "q8_0" else gguf.GGMLQuantizationType.F16
    writer = gguf.GGUFWriter(None, arch, use_temp_file=False)
    for f in reader.fields.values():
        if f.name == gguf.Keys.General.ARCHITECTURE or f.name.startswith("GGUF."):
            continue  # the writer writes these itself
        kind = f.types[0]
        sub = f.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(f.name, f.contents(), kind, sub_type=sub)
    for t in reader.tensors:
        w = replaced.get(t.name)
        if w is None:
            writer.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
        elif weights == "q8_0" and w.shape[-1] % 32 == 0:
            writer.add_tensor(t.name, gguf.quants.quantize(w.astype(np.float32), qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(t.name, w.astype(np.float16))
    with atomic_path(Path(out)) as tmp:
        writer.write_header_to_file(path=Path(tmp))
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return {"replaced_tensors": len(replaced), "kept_tensors": len(base_names) - len(replaced), "weights": weights}


def gguf_reply_nll(gguf_path: str | Path, encoded: list[tuple[list[int], list[int]]], threads: int | None = None
                   ) -> tuple[float, int]:
    """Summed negative log-likelihood and count of the labelled tokens (labels != -100, as in the task's
    transformers perplexity) of each (ids, labels) sequence, scored by llama.cpp on exactly these ids."""
    from luodi.engines.perplexity import decode_tokens, opened_model  # the engine's one way to open a model for scoring

    n_ctx = max(64, -(-max(len(ids) for ids, _ in encoded) // 32) * 32)
    nll, count = 0.0, 0
    with opened_model(gguf_path, n_ctx, n_ctx, threads) as (L, model, ctx):
        n_vocab = int(L.llama_vocab_n_tokens(L.llama_model_get_vocab(model)))
        mem = L.llama_get_memory(ctx)
        batch = L.llama_batch_init(n_ctx, 0, 1)
        try:
            for ids, labels in encoded:
                n = len(ids)
                targets = np.asarray(labels[1:n], dtype=np.int64)
                keep = np.flatnonzero(targets != -100)
                if n < 2 or keep.size == 0:
                    continue
                L.llama_memory_clear(mem, True)
                decode_tokens(L, ctx, batch, ids, 0, True)
                logits = np.ctypeslib.as_array(L.llama_get_logits(ctx), shape=(n, n_vocab))[: n - 1][keep]
                logits = logits.astype(np.float64)
                top = logits.max(axis=1, keepdims=True)
                lse = np.log(np.exp(logits - top).sum(axis=1)) + top[:, 0]
                nll += float((lse - logits[np.arange(keep.size), targets[keep]]).sum())
                count += int(keep.size)
        finally:
            L.llama_batch_free(batch)
    return nll, count


def gguf_reply_perplexity(gguf_path: str | Path, encoded: list[tuple[list[int], list[int]]]) -> float:
    """exp(mean NLL) of the labelled tokens through llama.cpp (see gguf_reply_nll)."""
    nll, n = gguf_reply_nll(gguf_path, encoded)
    if n == 0:
        raise ConfigError("no assistant tokens to score through the GGUF", param="data")
    return math.exp(nll / n)
