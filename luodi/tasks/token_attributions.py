"""Which words made a text-classification app choose its intent: integrated gradients over token embeddings.

The explained number is the neural heads' logit of the top class, weighted as the app mixes the heads: the
fine-tuned encoders' cosine-classifier logits (averaged over `finetune_seeds` members) and the logistic
regression on the frozen encoder's mean-pooled layers. Both are differentiable from the word embeddings on,
so Captum's integrated gradients (luodi.evaluate.attributions) attribute them to the tokens, with the baseline
text of the same length where every word is the pad token ([CLS] / [SEP] kept). The TF-IDF head is a sparse
n-gram lookup, not differentiable: it is left out of the explained number, and the answer says so.
Word pieces are summed into their word. `completeness_error` is |sum of attributions - (logit(x) -
logit(baseline))| / |logit(x)|.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from luodi.errors import BadRequest

STEPS = 32


@dataclass
class Part:
    """One differentiable head: weight, the token embedding table it reads, logits from embeddings + mask."""

    weight: float
    tokenizer: Any
    embeddings: Any  # torch.nn.Embedding
    logits: Any  # (inputs_embeds, attention_mask) -> (b, k)
    name: str


def _mean_normalized(hidden: Any, mask: Any) -> Any:
    import torch.nn.functional as F

    m = mask.unsqueeze(-1).to(hidden.dtype)
    return F.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)


def _finetune_part(member: Any, weight: float) -> Part:
    enc = member.encoder

    def logits(emb: Any, mask: Any) -> Any:
        hidden = enc(inputs_embeds=emb, attention_mask=mask).last_hidden_state
        return member.head(_mean_normalized(hidden, mask) * member.scale)

    return Part(weight, member.tokenizer, enc.get_input_embeddings(), logits, "finetune")


def _embeddings_part(encoder: Any, head: Any, layers: list[int], weight: float) -> Part:
    import torch

    coef, icpt = torch.from_numpy(head.coef), torch.from_numpy(head.intercept)

    def logits(emb: Any, mask: Any) -> Any:
        states = encoder.model(inputs_embeds=emb, attention_mask=mask, output_hidden_states=True).hidden_states
        x = torch.cat([_mean_normalized(states[i], mask) for i in layers], -1)
        z = x @ coef.T + icpt
        return torch.cat([torch.zeros_like(z), z], 1) if z.shape[1] == 1 else z  # binary: one row stored

    return Part(weight, encoder.tokenizer, encoder.model.get_input_embeddings(), logits, "embeddings")


def differentiable_parts(task: Any) -> list[Part]:
    """The app's differentiable heads with their mixing weights (the TF-IDF head is not one)."""
    from luodi.embeddings import get_encoder

    heads = [h for h in ("finetune", "embeddings", "tfidf") if getattr(task, _ATTR[h]) is not None]
    weights = task._mix_weights(heads)
    parts: list[Part] = []
    if task.ft_model is not None:
        members = task.ft_model.members
        parts += [_finetune_part(m, weights["finetune"] / len(members)) for m in members]
    if task.emb_head is not None:
        encoder = get_encoder(task.source)
        parts.append(_embeddings_part(encoder, task.emb_head, list(task.opts.layers), weights["embeddings"]))
    return parts


_ATTR = {"finetune": "ft_model", "embeddings": "emb_head", "tfidf": "tfidf_head"}


def _words(tokens: list[str], scores: np.ndarray, special: set[str]) -> list[tuple[str, float]]:
    """Word pieces ('##x') summed into their word; special tokens dropped."""
    out: list[tuple[str, float]] = []
    for t, s in zip(tokens, scores, strict=True):
        if t in special:
            continue
        if t.startswith("##") and out:
            out[-1] = (out[-1][0] + t[2:], out[-1][1] + float(s))
        else:
            out.append((t.lstrip("Ġ▁"), float(s)))
    return out


def attribute_text(parts: list[Part], text: str, target: int, max_length: int, steps: int = STEPS) -> dict[str, Any]:
    """Token attributions of the weighted logit of class `target` for one text: words with their effect, the
    explained logit, its baseline value and the completeness error."""
    import torch

    from luodi.evaluate.attributions import integrated_gradients

    words: list[tuple[str, float]] | None = None
    total_attr = logit = base_logit = 0.0
    for part in parts:
        tok = part.tokenizer
        batch = tok([text], truncation=True, max_length=max_length, return_tensors="pt")
        ids, mask = batch["input_ids"], batch["attention_mask"]
        special = torch.tensor([i in set(tok.all_special_ids) for i in ids[0].tolist()])
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        base_ids = torch.where(special, ids, torch.full_like(ids, pad))
        with torch.no_grad():
            x, b = part.embeddings(ids), part.embeddings(base_ids)

        def forward(emb: Any, m: Any, part: Part = part) -> Any:
            return part.weight * part.logits(emb, m.expand(len(emb), -1))

        attr, _ = integrated_gradients(forward, x, b, target, steps, additional_forward_args=(mask,))
        scores = attr.sum(-1)[0].detach().numpy()
        with torch.no_grad():
            fx, fb = float(forward(x, mask)[0, target]), float(forward(b, mask)[0, target])
        total_attr, logit, base_logit = total_attr + float(scores.sum()), logit + fx, base_logit + fb
        tokens = tok.convert_ids_to_tokens(ids[0].tolist())
        merged = _words(tokens, scores, set(tok.all_special_tokens))
        words = merged if words is None else [(w, a + s) for (w, a), (_, s) in zip(words, merged, strict=False)]
    error = abs(total_attr - (logit - base_logit)) / max(abs(logit), 1e-12)
    return {"words": words or [], "logit": logit, "baseline_logit": base_logit, "completeness_error": error}


def explain_texts(
    task: Any, records: list[dict[str, Any]], top: int | None = None, steps: int = STEPS
) -> list[dict[str, Any]]:
    """Predictions of a text-classification app with an `explanation` each: the words sorted by the size of
    their integrated-gradients effect on the top class's logit (see the module docstring)."""
    parts = differentiable_parts(task)
    if not parts:
        raise BadRequest(
            "this text app has only the TF-IDF head, which is not differentiable: nothing to explain with "
            "integrated gradients (add `embeddings` or `finetune` to model.options.features)",
            param="explain",
        )
    from luodi.tasks.text_records import records_texts

    texts = records_texts(records)
    outs = task.predict(records)
    heads = " + ".join(dict.fromkeys(p.name for p in parts))
    tfidf_note = "; the TF-IDF head is not differentiable and not explained" if task.tfidf_head is not None else ""
    result = []
    for text, out in zip(texts, outs, strict=True):
        label = out["top_k"][0]["label"]
        a = attribute_text(parts, text, task.classes.index(label), task.opts.max_length, steps)
        effects = sorted(({"token": w, "effect": round(s, 6)} for w, s in a["words"]), key=lambda e: -abs(e["effect"]))
        explanation = {
            "target": f"logit of '{label}' ({heads}{tfidf_note})",
            "method": "integrated-gradients",
            "steps": steps,
            "base": round(a["baseline_logit"], 6),
            "completeness_error": round(a["completeness_error"], 6),
            "effects": effects[:top] if top else effects,
        }
        result.append({**out, "explanation": explanation})
    return result
