"""Structured pruning of fine-tuned BERT-style encoders (`luodi optimize APP.yaml --method prune`).

Whole attention heads (rows of Q, K, V and columns of the output projection) and whole feed-forward channels
(rows of the intermediate layer, columns of the output layer) are cut out with transformers'
`prune_linear_layer`, so every matrix is really smaller and a CPU does less work; masks or unstructured sparsity
would leave the dense matrices, and the time, unchanged. (transformers 5 dropped `model.prune_heads`; cutting
Q/K/V/O by head blocks is what it did.)

Ranking: the first-order Taylor estimate of the loss change when a head or channel is removed. A mask m on a
head's (or a channel's) output enters the model only through the output projection's columns of that head, so
dL/dm = sum over those columns of gradient x weight: accumulated as |.| per batch over training texts (Michel et
al., 2019, "Are sixteen heads really better than one?"). Scores are L2-normalized per layer and ranked over all
layers, so layers keep different numbers of heads and widths; every layer keeps at least one head and 16
channels, and widths are rounded to multiples of 16 (vector-friendly shapes).

Recovery: each pruned member is fine-tuned again (all its layers) on alpha * T^2 * KL(unpruned model ||
pruned) + (1 - alpha) * CE(labels), the teacher being the whole unpruned model (every head mixed).

Storage: the kept heads per layer (indices of the unpruned encoder) and the feed-forward width per layer go into
model.options.pruned (text_classification.json); loading builds those shapes on the unpruned encoder, then
reads the safetensors weights over them (no pickle).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from luodi.errors import ConfigError
from luodi.train.torch_loop import CHECKPOINT_DIR

FFN_MULTIPLE = 16  # feed-forward widths are multiples of this (and at least this)


def bert_layers(model: Any) -> nn.ModuleList:
    """The transformer layers of a CosineClassifier's BERT-style encoder; a ConfigError for other encoders."""
    enc = model.encoder
    layers = getattr(getattr(enc, "encoder", None), "layer", None)
    if layers is None or not hasattr(layers[0], "attention") or not hasattr(layers[0], "intermediate"):
        raise ConfigError(
            f"--method prune cuts the heads and feed-forward channels of BERT-style encoders (MiniLM); "
            f"{type(enc).__name__} is not one: prune an app whose members all use such an encoder",
            param="model.options.finetune_sources",
        )
    return layers


def prune_layer(layer: nn.Module, heads: list[int], channels: torch.Tensor) -> None:
    """Keep only `heads` (indices among the layer's current heads) and the feed-forward `channels` of `layer`."""
    from transformers.pytorch_utils import prune_linear_layer

    att = layer.attention.self
    d = att.attention_head_size
    idx = torch.cat([torch.arange(h * d, (h + 1) * d) for h in heads]).long()
    att.query = prune_linear_layer(att.query, idx)
    att.key = prune_linear_layer(att.key, idx)
    att.value = prune_linear_layer(att.value, idx)
    layer.attention.output.dense = prune_linear_layer(layer.attention.output.dense, idx, dim=1)
    att.num_attention_heads, att.all_head_size = len(heads), len(heads) * d
    channels = channels.long()
    layer.intermediate.dense = prune_linear_layer(layer.intermediate.dense, channels)
    layer.output.dense = prune_linear_layer(layer.output.dense, channels, dim=1)


def apply_shapes(model: Any, shape: Any) -> None:
    """Give an unpruned CosineClassifier the shapes of a pruned one (`shape`: options.PrunedEncoder), before its
    weights are loaded: which channels are kept does not matter, the loaded weights replace them all."""
    layers = bert_layers(model)
    if len(shape.heads) != len(layers) or len(shape.ffn) != len(layers):
        raise ConfigError(
            f"model.options.pruned describes {len(shape.heads)} layers; the encoder has {len(layers)}",
            param="model.options.pruned",
        )
    for layer, heads, width in zip(layers, shape.heads, shape.ffn, strict=True):
        n_heads = layer.attention.self.num_attention_heads
        if not heads or max(heads) >= n_heads or width > layer.intermediate.dense.out_features:
            raise ConfigError(f"model.options.pruned {shape.heads} / {shape.ffn} does not fit the encoder",
                              param="model.options.pruned")
        prune_layer(layer, sorted(heads), torch.arange(width))


def shapes_of(model: Any, kept_heads: list[list[int]]) -> dict[str, Any]:
    """The options.PrunedEncoder of a pruned model (kept heads: indices of the unpruned encoder's heads)."""
    return {"heads": kept_heads, "ffn": [int(layer.intermediate.dense.out_features) for layer in bert_layers(model)]}


def encoder_layer_parameters(model: Any) -> int:
    """Parameters in the transformer layers (what pruning shrinks; the token embeddings stay)."""
    return sum(p.numel() for p in bert_layers(model).parameters())


def importance(model: Any, texts: list[str], y: np.ndarray, max_length: int, how: str,
               batch_size: int = 16) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per layer: one score per attention head and one per feed-forward channel (higher: keep)."""
    layers = bert_layers(model)
    if how == "magnitude":
        heads, ffn = [], []
        for layer in layers:
            w = layer.attention.output.dense.weight.detach()
            heads.append(w.pow(2).sum(0).view(layer.attention.self.num_attention_heads, -1).sum(1).sqrt())
            ffn.append(layer.output.dense.weight.detach().norm(dim=0))
        return heads, ffn
    was = {name: p.requires_grad for name, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad = True
    heads = [torch.zeros(layer.attention.self.num_attention_heads) for layer in layers]
    ffn = [torch.zeros(layer.output.dense.in_features) for layer in layers]
    labels = torch.as_tensor(np.asarray(y, dtype=np.int64))
    model.eval()  # no dropout: the scores of the model as it predicts
    try:
        for start in range(0, len(texts), batch_size):
            model.zero_grad(set_to_none=True)
            logits = model(model.tokenize(texts[start : start + batch_size], max_length))
            F.cross_entropy(logits, labels[start : start + batch_size]).backward()
            for k, layer in enumerate(layers):
                o = layer.attention.output.dense.weight
                heads[k] += (o * o.grad).sum(0).view(len(heads[k]), -1).sum(1).abs().detach()
                w = layer.output.dense.weight
                ffn[k] += (w * w.grad).sum(0).abs().detach()
    finally:
        model.zero_grad(set_to_none=True)
        for name, p in model.named_parameters():
            p.requires_grad = was[name]
    return heads, ffn


def choose(scores: list[torch.Tensor], fraction: float, floor: int, multiple: int = 1) -> list[list[int]]:
    """Per layer, the indices kept when `fraction` of all units is removed by globally ranked, per-layer
    L2-normalized scores; at least `floor` per layer, counts rounded to `multiple` (never above the layer's)."""
    total = sum(len(s) for s in scores)
    keep_total = total - int(round(fraction * total))
    normed = [s / s.norm().clamp(min=1e-12) for s in scores]
    flat = torch.cat(normed)
    owner = torch.cat([torch.full((len(s),), i) for i, s in enumerate(scores)])
    top = torch.argsort(flat, descending=True)[:keep_total]
    counts = torch.bincount(owner[top], minlength=len(scores)).tolist()
    kept = []
    for s, n in zip(normed, counts, strict=True):
        n = max(floor, int(round(n / multiple)) * multiple)
        kept.append(sorted(torch.argsort(s, descending=True)[: min(n, len(s))].tolist()))
    return kept


def prune_member(model: Any, texts: list[str], y: np.ndarray, max_length: int, prune_opts: Any) -> list[list[int]]:
    """Prune `model` in place by prune_opts (heads, ffn, importance); returns the kept heads per layer."""
    heads, ffn = importance(model, texts, y, max_length, prune_opts.importance)
    kept_heads = choose(heads, prune_opts.heads, floor=1)
    kept_ffn = choose(ffn, prune_opts.ffn, floor=FFN_MULTIPLE, multiple=FFN_MULTIPLE)
    for layer, h, c in zip(bert_layers(model), kept_heads, kept_ffn, strict=True):
        prune_layer(layer, h, torch.tensor(c))
    return kept_heads


def importance_sample(texts: list[str], y: np.ndarray, opts: Any) -> tuple[list[str], np.ndarray]:
    """The training texts (and labels) whose gradients rank heads and channels: opts.importance_rows of a shuffle
    seeded by opts.seed."""
    pick = np.random.default_rng(opts.seed).permutation(len(texts))[: opts.importance_rows]
    return [texts[i] for i in pick], np.asarray(y)[pick]


def narrow(model: Any, texts: list[str], y: np.ndarray, max_length: int, cut: Any,
           previous: list[list[int]] | None = None) -> dict[str, Any] | None:
    """Cut `cut.heads` of the attention heads and `cut.ffn` of the feed-forward channels out of `model` in place
    (ranked on cut.importance_rows training texts); its shapes (options.PrunedEncoder) or None when nothing is
    cut. `previous`: the kept heads per layer (unpruned indices) of an encoder that was pruned before, so the
    shapes still name the unpruned encoder's heads. What distill does to a narrower student."""
    if not cut.heads and not cut.ffn:
        return None if previous is None else shapes_of(model, previous)
    sample, sample_y = importance_sample(texts, y, cut)
    kept = prune_member(model, sample, sample_y, max_length, cut)
    if previous is not None:
        kept = [[old[i] for i in now] for old, now in zip(previous, kept, strict=True)]
    return shapes_of(model, kept)


def prune_ensemble(
    members: list[Any],
    texts: list[str],
    y: np.ndarray,
    teacher_log_probs: np.ndarray,
    *,
    opts: Any,
    prune_opts: Any,
    run_dir: Path,
    recover: Any,
    say: Any = print,
    progress: bool = True,
    previous: list[Any] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Prune and recover every member in place; returns their shapes (model.options.pruned) and a summary.
    `recover` is text_finetune.learn_from_teacher (passed in: text_finetune imports this module's shapes).
    `previous`: the members' shapes when they were pruned before (a pruned run pruned again), so the kept
    heads are still named by their indices in the unpruned encoder."""
    for m in members:
        bert_layers(m)  # refuse a decoder member before any work
    sample, sample_y = importance_sample(texts, y, prune_opts)
    shapes, before, after = [], 0, 0
    for k, member in enumerate(members):
        before += encoder_layer_parameters(member)
        kept = prune_member(member, sample, sample_y, opts.max_length, prune_opts)
        if previous:
            kept = [[old[i] for i in now] for old, now in zip(previous[k].heads, kept, strict=True)]
        shape = shapes_of(member, kept)
        say(f"member {k}: heads kept per layer {[len(h) for h in kept]}, feed-forward widths {shape['ffn']}; "
            f"recovering {prune_opts.epochs} epochs")
        recover(member, texts, y, teacher_log_probs, opts=opts, kd=prune_opts,
                checkpoints=Path(run_dir) / CHECKPOINT_DIR / f"prune-member-{k}", progress=progress)
        after += encoder_layer_parameters(member)
        shapes.append(shape)
    return shapes, {"layer_parameters": {"before": before, "after": after}, "layer_parameters_kept": after / before}
