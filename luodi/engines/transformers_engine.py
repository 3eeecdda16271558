"""Reference engine: plain PyTorch transformers, one sequence at a time (slow but exact and portable).

It shares the scheduler (queue, cancellation, stop strings, UTF-8 streaming) with the fast engines; only
`step` differs: one forward pass with a per-sequence KV cache. A GGUF source is converted once to an HF
directory (luodi.models.gguf_to_hf_dir).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from functools import lru_cache
from typing import Any

from luodi.engines.base import GenerationChunk, SamplingParams
from luodi.engines.chat_template import normalize_messages, render_chat
from luodi.engines.limits import check_request
from luodi.engines.scheduler import Scheduler, Sequence, Stream
from luodi.errors import BadRequest
from luodi.models import ModelSource, gguf_to_hf_dir, load_quietly, resolve


@lru_cache
def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode table (byte-level BPE token text -> raw bytes)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


class TransformersEngine(Scheduler):
    """An HF causal LM on PyTorch (fp32, CPU or whatever torch uses), decoding one request at a time."""

    name = "transformers"
    degraded: str | None = None  # why it serves instead of llama.cpp (set by load_engine's fallback)

    def __init__(self, source: ModelSource | str, *, model_id: str | None = None, n_ctx: int = 2048,
                 max_queue: int = 64, threads: int | None = None, **_ignored: Any) -> None:
        super().__init__(1, max_queue, name="luodi-transformers")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        src = resolve(source) if isinstance(source, str) else source
        path = gguf_to_hf_dir(src.path) if src.kind == "gguf" else src.path
        self.model_id = model_id or src.spec
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = load_quietly(AutoModelForCausalLM.from_pretrained, path, dtype=torch.float32).eval()
        limit = getattr(self.model.config, "max_position_embeddings", None) or n_ctx
        self.n_ctx = min(n_ctx, limit)
        self.n_vocab = int(self.model.config.vocab_size)
        eos = self.model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos]
        self._eos = {t for t in eos + [self.tokenizer.eos_token_id] if t is not None}
        self._special = set(self.tokenizer.all_special_ids)
        self._pieces: dict[int, bytes] = {}

    # --- Engine interface -----------------------------------------------------------------------
    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def chat_prompt(self, messages: list[dict[str, Any]], tools: list[dict] | None = None) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                normalize_messages(messages), tools=tools, tokenize=False, add_generation_prompt=True)
        return render_chat(None, messages, tools=tools)

    def generate(self, prompt: str | list[int], params: SamplingParams | None = None
                 ) -> AsyncIterator[GenerationChunk]:
        params = params or SamplingParams()
        if params.grammar or params.json_schema is not None or params.json_object:
            raise BadRequest("constrained decoding (json_schema / json_object / grammar) needs the llamacpp "
                             "engine; set LUODI_ENGINE=llamacpp", param="response_format")
        ids = self.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        max_tokens = check_request(ids, params, self.n_ctx, self.n_vocab)
        stream = Stream(len(ids), self.wake)
        seq = Sequence(ids, params, max_tokens, self._piece, self._eos.__contains__, stream)
        seed = params.seed if params.seed is not None else random.getrandbits(63)
        gen = self._torch.Generator().manual_seed(seed)
        seq.slot = {"cache": None, "gen": gen}
        return self.submit(seq)

    # --- decoding -------------------------------------------------------------------------------
    def _piece(self, tok: int) -> bytes:
        piece = self._pieces.get(tok)
        if piece is None:
            if tok in self._special:
                piece = b""
            else:
                text = self.tokenizer.convert_ids_to_tokens(tok)
                dec = _byte_decoder()
                if all(ch in dec for ch in text):
                    piece = bytes(dec[ch] for ch in text)
                elif text.startswith("<0x") and text.endswith(">") and len(text) == 6:
                    piece = bytes([int(text[3:5], 16)])
                else:
                    piece = text.replace("\u2581", " ").encode()
            self._pieces[tok] = piece
        return piece

    def step(self, running: list[Sequence]) -> None:
        torch = self._torch
        seq = running[0]
        with torch.inference_mode():
            if seq.prefilling:
                from transformers import DynamicCache

                seq.slot["cache"] = DynamicCache()
                inp = torch.tensor([seq.prompt_ids])
                seq.n_prefilled = seq.n_past = len(seq.prompt_ids)
            else:
                inp = torch.tensor([[seq.last_token]])
                seq.n_past += 1
            out = self.model(input_ids=inp, past_key_values=seq.slot["cache"], use_cache=True)
            seq.slot["cache"] = out.past_key_values
            logits = out.logits[0, -1].float()
            token = self._sample(logits, seq.params, seq.slot["gen"], seq.generated)
            seq.accept(token, logits.numpy() if seq.wants_logprobs else None)

    def _sample(self, logits: Any, p: SamplingParams, gen: Any, generated: list[int]) -> int:
        torch = self._torch
        if p.logit_bias:
            logits = logits.clone()
            for tok, b in p.logit_bias.items():
                logits[tok] += b
        if generated and (p.presence_penalty or p.frequency_penalty):  # as llama.cpp's penalties sampler
            counts = torch.bincount(torch.tensor(generated), minlength=logits.numel())[: logits.numel()].float()
            logits = logits - p.frequency_penalty * counts - p.presence_penalty * (counts > 0).float()
        if not p.temperature or p.temperature <= 0:
            return int(torch.argmax(logits))
        logits = logits / p.temperature
        if p.top_k and p.top_k > 0:
            kth = torch.topk(logits, min(p.top_k, logits.numel())).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, -1)
        if p.top_p < 1.0:
            sp, si = torch.sort(probs, descending=True)
            cut = torch.cumsum(sp, -1) - sp > p.top_p
            sp[cut] = 0
            probs = torch.zeros_like(probs).scatter(0, si, sp)
        return int(torch.multinomial(probs, 1, generator=gen))

    def release(self, seq: Sequence) -> None:
        seq.slot = None
