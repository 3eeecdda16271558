"""The fast CPU engine: llama.cpp through llama-cpp-python's low-level API, continuously batched.

Every scheduler step builds ONE llama_batch: the last sampled token of each decoding sequence (each with
its own seq_id and KV cells) plus up to `prefill_chunk` prompt tokens of newly admitted sequences, so a new
request never stalls running ones. The KV cache is unified (shared by all sequences); admission reserves
prompt + max_tokens cells per sequence, so a step never runs out of cache.
"""

from __future__ import annotations

import ctypes
import logging
import os
import random
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import llama_cpp as L
import numpy as np

from luodi.engines import ggml_cpu
from luodi.engines.base import GenerationChunk, SamplingParams
from luodi.engines.chat_template import render_chat
from luodi.engines.grammar import grammar_for
from luodi.engines.limits import check_request
from luodi.engines.requantize import requantized_gguf
from luodi.engines.scheduler import Scheduler, Sequence, Stream
from luodi.engines.threadpool import ThreadPool, cpu_sample
from luodi.errors import BadRequest, ConfigError, LuodiError

log = logging.getLogger(__name__)

_init_lock = threading.Lock()
_initialized = False


def _init_llama() -> None:
    global _initialized
    with _init_lock:
        if not _initialized:
            ggml_cpu.quiet_llama_logs()
            L.llama_backend_init()
            _initialized = True


class _Slot:
    """llama.cpp state of one sequence."""

    __slots__ = ("cells", "sampler", "seq_id")

    def __init__(self, sampler: Any) -> None:
        self.sampler = sampler
        self.seq_id: int | None = None
        self.cells = 0  # KV cells reserved for it now (grows in GROW_CELLS steps up to prompt + max_tokens)


GROW_CELLS = 256  # KV cells reserved for generated tokens at a time


class _CachedPrefix:
    """KV cells kept after a sequence finished, tagged with a cache seq_id."""

    __slots__ = ("seq_id", "tokens")

    def __init__(self, seq_id: int, tokens: list[int]) -> None:
        self.seq_id = seq_id
        self.tokens = tokens


def _kv_tokens(seq: Sequence) -> list[int]:
    """The tokens whose KV cells a sequence has written (prompt, then generated tokens)."""
    if seq.n_past <= len(seq.prompt_ids):
        return seq.prompt_ids[: seq.n_past]
    return seq.prompt_ids + seq.generated[: seq.n_past - len(seq.prompt_ids)]


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class LlamaCppEngine(Scheduler):
    """A GGUF model served by llama.cpp with continuous batching (see module docstring)."""

    name = "llamacpp"

    def __init__(self, model_path: str | Path, *, model_id: str | None = None, n_ctx: int = 2048,
                 max_running: int = 16, max_queue: int = 64, threads: int | None = None,
                 prefill_chunk: int = 256, kv_budget_mb: int = 256, flash_attn: bool = True,
                 adaptive_threads: bool = True, requantize: str | None = None, prefix_cache: int = 4,
                 ggml_poll: int = 50) -> None:
        super().__init__(max_running, max_queue, name="luodi-llamacpp")
        path = Path(model_path)
        if not path.is_file():
            raise ConfigError(f"GGUF file not found: {path}", param="model")
        # this machine's CPU kernels, checked on this model in a child process first (raises SelfCheckFailed)
        self.self_check = ggml_cpu.prepare(path, max(1, threads or os.cpu_count() or 1))
        self.cpu = ggml_cpu.describe()
        _init_llama()
        if requantize:
            path = requantized_gguf(path, requantize)
        self.model_id = model_id or path.stem
        mp = L.llama_model_default_params()
        self._model = L.llama_model_load_from_file(str(path).encode(), mp)
        if not self._model:
            raise ConfigError(f"llama.cpp could not load '{path}': is it a valid GGUF file?", param="model")
        self._vocab = L.llama_model_get_vocab(self._model)
        self.n_vocab = int(L.llama_vocab_n_tokens(self._vocab))
        self.n_ctx = max(16, min(n_ctx, L.llama_model_n_ctx_train(self._model)))
        self.prefill_chunk = max(16, prefill_chunk)

        # KV cache: unified, shared by all sequences; sized by a memory budget but never below one full
        # context and never above what max_running full contexts could use.
        n_layer = L.llama_model_n_layer(self._model)
        head_dim = L.llama_model_n_embd(self._model) // max(1, L.llama_model_n_head(self._model))
        self.kv_bytes_per_cell = 2 * n_layer * L.llama_model_n_head_kv(self._model) * head_dim * 2  # K+V, f16
        budget_cells = kv_budget_mb * 2**20 // self.kv_bytes_per_cell
        want = min(self.n_ctx * max_running, max(self.n_ctx, budget_cells))
        cp = L.llama_context_default_params()
        cp.n_ctx = want
        cp.n_batch = cp.n_ubatch = self.prefill_chunk + max_running
        self._cache_ids = list(range(max_running, max_running + max(0, prefix_cache)))
        cp.n_seq_max = max_running + len(self._cache_ids)
        cp.kv_unified = True
        self.max_threads = max(1, threads or os.cpu_count() or 1)
        self.threads = self.max_threads
        self._adaptive = adaptive_threads and self.max_threads > 1
        self._threads_checked = 0.0
        self._cpu_last: tuple[float, float, float] | None = None
        cp.n_threads = cp.n_threads_batch = self.threads
        cp.flash_attn_type = (L.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn
                              else L.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        cp.no_perf = True
        self._ctx = L.llama_init_from_model(self._model, cp)
        if not self._ctx:
            L.llama_model_free(self._model)
            raise ConfigError(f"llama.cpp could not create a context of {want} cells for '{path}'",
                              param="n_ctx")
        self.kv_cells = L.llama_n_ctx(self._ctx)
        self._mem = L.llama_get_memory(self._ctx)
        self._batch = L.llama_batch_init(cp.n_batch, 0, 1)
        self._pool = ThreadPool(self.max_threads, poll=ggml_poll)
        self._pool.attach(self._ctx)
        self._reserved = 0
        self._free_ids = list(range(max_running))
        self._cache: list[_CachedPrefix] = []  # finished sequences' KV, most recently used last
        self.reused_tokens = 0  # prompt tokens taken from the prefix cache instead of recomputed
        self._pieces: dict[int, bytes] = {}
        self._piece_buf = ctypes.create_string_buffer(256)
        self._template = self._meta("tokenizer.chat_template")
        self._bos = self._token_text(L.llama_vocab_bos(self._vocab))
        self._eos = self._token_text(L.llama_vocab_eos(self._vocab))

    # --- model facts ----------------------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(65536)
        n = L.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", "replace") if n >= 0 else None

    def _token_text(self, tok: int) -> str:
        if tok < 0:
            return ""
        buf = ctypes.create_string_buffer(256)
        n = L.llama_token_to_piece(self._vocab, tok, buf, len(buf), 0, True)
        return buf.raw[: max(0, n)].decode("utf-8", "replace")

    def _piece(self, tok: int) -> bytes:
        piece = self._pieces.get(tok)
        if piece is None:
            n = L.llama_token_to_piece(self._vocab, tok, self._piece_buf, len(self._piece_buf), 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = L.llama_token_to_piece(self._vocab, tok, buf, len(buf), 0, False)
                piece = buf.raw[:n]
            else:
                piece = self._piece_buf.raw[:n]
            self._pieces[tok] = piece
        return piece

    def _is_eog(self, tok: int) -> bool:
        return bool(L.llama_vocab_is_eog(self._vocab, tok))

    # --- Engine interface -----------------------------------------------------------------------
    def tokenize(self, text: str, *, special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 16
        arr = (L.llama_token * cap)()
        n = L.llama_tokenize(self._vocab, data, len(data), arr, cap, special, special)
        if n < 0:
            cap = -n
            arr = (L.llama_token * cap)()
            n = L.llama_tokenize(self._vocab, data, len(data), arr, cap, special, special)
        return list(arr[:n])

    def detokenize(self, tokens: list[int]) -> str:
        return b"".join(self._piece(t) for t in tokens).decode("utf-8", "replace")

    def chat_prompt(self, messages: list[dict[str, Any]], tools: list[dict] | None = None) -> str:
        return render_chat(self._template, messages, bos_token=self._bos, eos_token=self._eos, tools=tools)

    def generate(self, prompt: str | list[int], params: SamplingParams | None = None
                 ) -> AsyncIterator[GenerationChunk]:
        params = params or SamplingParams()
        ids = self.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        max_tokens = check_request(ids, params, self.n_ctx, self.n_vocab)
        sampler = self._make_sampler(params)
        stream = Stream(len(ids), self.wake)
        seq = Sequence(ids, params, max_tokens, self._piece, self._is_eog, stream)
        seq.slot = _Slot(sampler)
        try:
            return self.submit(seq)
        except BaseException:
            if sampler is not None:
                L.llama_sampler_free(sampler)
            raise

    def stats(self) -> dict[str, int]:
        out = super().stats()
        out.update(kv_cells=self.kv_cells, kv_cells_reserved=self._reserved, threads=self.threads,
                   prefix_cache_entries=len(self._cache), prompt_tokens_reused=self.reused_tokens)
        return out

    # --- sampling -------------------------------------------------------------------------------
    def _make_sampler(self, p: SamplingParams) -> Any:
        """llama.cpp's sampler chain for `p`; None for plain greedy decoding, which the step does with an argmax
        over the logits row (the same token as llama.cpp's greedy sampler, without copying the whole vocabulary
        into a candidate array every token)."""
        constrained = p.grammar or p.json_schema is not None or p.json_object
        if p.temperature <= 0 and not p.logit_bias and not (p.presence_penalty or p.frequency_penalty) \
                and not constrained:
            return None
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        if p.logit_bias:  # first, so greedy, grammar and top-k / top-p all see the biased logits
            bias = (L.llama_logit_bias * len(p.logit_bias))(
                *(L.llama_logit_bias(int(t), float(b)) for t, b in p.logit_bias.items())
            )
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_logit_bias(self.n_vocab, len(bias), bias))
        if p.presence_penalty or p.frequency_penalty:  # over every generated token (repeat penalty off)
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_penalties(
                self.n_vocab, max(1, int(p.max_tokens or self.n_ctx)), 1.0,
                float(p.frequency_penalty), float(p.presence_penalty)))
        gbnf = grammar_for(p)
        if gbnf:
            g = L.llama_sampler_init_grammar(self._vocab, gbnf.encode(), b"root")
            if not g:
                L.llama_sampler_free(chain)
                param = "grammar" if p.grammar else "response_format"
                raise BadRequest(f"invalid {param}: llama.cpp could not parse the GBNF grammar", param=param)
            L.llama_sampler_chain_add(chain, g)
        if p.temperature <= 0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
            return chain
        if p.top_k and p.top_k > 0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_k(int(p.top_k)))
        if p.top_p < 1.0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(float(p.top_p), 1))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(float(p.temperature)))
        seed = p.seed if p.seed is not None else random.getrandbits(32)
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        return chain

    # --- scheduler hooks (run on the scheduler thread) ------------------------------------------
    # Prefix cache: the KV cells of finished sequences stay tagged with a cache seq_id; a new sequence whose
    # prompt starts with the same tokens (system prompt, earlier turns of a conversation) gets those cells
    # tagged with its own seq_id (llama_memory_seq_cp: no copy in a unified cache) and skips their prefill.
    # Running sequences are prefix donors too. Cached cells count as reserved; the LRU entry is evicted
    # whenever a new sequence needs the room.
    def _first_cells(self, seq: Sequence) -> int:
        return min(seq.reserved, len(seq.prompt_ids) + GROW_CELLS)

    def _make_room(self, cells: int) -> bool:
        """True when `cells` more KV cells can be reserved, evicting prefix-cache entries if needed."""
        while self._reserved + cells > self.kv_cells and self._cache:
            self._evict(self._cache[0])
        return self._reserved + cells <= self.kv_cells

    def can_admit(self, seq: Sequence) -> bool:
        return bool(self._free_ids) and self._make_room(self._first_cells(seq))

    def admit(self, seq: Sequence) -> None:
        sid = seq.slot.seq_id = self._free_ids.pop()
        seq.slot.cells = self._first_cells(seq)
        self._reserved += seq.slot.cells
        L.llama_memory_seq_rm(self._mem, sid, -1, -1)
        best, donor, entry = 0, None, None
        prompt = seq.prompt_ids
        for c in reversed(self._cache):
            n = _common_prefix(c.tokens, prompt)
            if n > best:
                best, donor, entry = n, c.seq_id, c
        for other in self.running:
            if other is not seq and other.slot is not None and other.slot.seq_id is not None:
                n = _common_prefix(_kv_tokens(other), prompt)
                if n > best:
                    best, donor, entry = n, other.slot.seq_id, None
        best = min(best, len(prompt) - 1)  # the last prompt token is always computed: it yields the logits
        if best >= 4 and donor is not None:
            L.llama_memory_seq_cp(self._mem, donor, sid, 0, best)
            seq.n_prefilled = seq.n_past = best
            self.reused_tokens += best
            if entry is not None:  # refresh LRU order
                self._cache.remove(entry)
                self._cache.append(entry)

    def release(self, seq: Sequence) -> None:
        slot: _Slot | None = seq.slot
        if slot is None:
            return
        if slot.seq_id is not None:
            self._reserved -= slot.cells
            if seq.finish_reason in ("stop", "length") and seq.n_past >= 8 and self._cache_ids is not None:
                self._keep(slot.seq_id, _kv_tokens(seq))
            L.llama_memory_seq_rm(self._mem, slot.seq_id, -1, -1)
            self._free_ids.append(slot.seq_id)
        if slot.sampler:
            L.llama_sampler_free(slot.sampler)
        seq.slot = None

    def _keep(self, sid: int, tokens: list[int]) -> None:
        for c in list(self._cache):  # an entry that is a prefix of this one is superseded
            if len(c.tokens) <= len(tokens) and tokens[: len(c.tokens)] == c.tokens:
                self._evict(c)
        if not self._cache_ids and self._cache:
            self._evict(self._cache[0])
        if not self._cache_ids:
            return
        cid = self._cache_ids.pop()
        L.llama_memory_seq_rm(self._mem, cid, -1, -1)
        L.llama_memory_seq_cp(self._mem, sid, cid, 0, len(tokens))
        self._cache.append(_CachedPrefix(cid, tokens))
        self._reserved += len(tokens)

    def _evict(self, c: _CachedPrefix) -> None:
        L.llama_memory_seq_rm(self._mem, c.seq_id, -1, -1)
        self._cache.remove(c)
        self._cache_ids.append(c.seq_id)
        self._reserved -= len(c.tokens)

    def _adapt_threads(self) -> None:
        """Use fewer decode threads while other processes keep the CPUs busy, all of them when they are free.

        ggml's workers spin at the barriers between operations: when another process takes a core from one of
        them, the other spins for the rest of that time slice, and a 2-thread decode can run several times slower
        than a 1-thread one. Measured each second from /proc/stat (CPU time the whole machine used) minus this
        process's own, so the engine reacts within a second; the load average lags by minutes and had kept a
        server on one thread for a minute after a build finished.
        """
        now = time.monotonic()
        if now - self._threads_checked < 1.0:
            return
        sample = cpu_sample()
        last, self._cpu_last, self._threads_checked = self._cpu_last, sample, now
        if sample is None or last is None:
            return
        busy, ours = sample[0] - last[0], sample[1] - last[1]
        seconds = sample[2] - last[2]
        if seconds <= 0:
            return
        others = max(0.0, (busy - ours) / seconds)  # cores' worth of CPU that other processes used
        cores = os.cpu_count() or 1
        want = max(1, min(self.max_threads, int(cores - others + 0.5)))
        if want != self.threads:
            log.info("decode threads %d -> %d (other processes used %.1f of %d cores)", self.threads, want,
                     others, cores)
            self.threads = want
            L.llama_set_n_threads(self._ctx, want, want)

    def step(self, running: list[Sequence]) -> None:
        if self._adaptive:
            self._adapt_threads()
        b = self._batch
        tok, pos, nsid, sid, logits = b.token, b.pos, b.n_seq_id, b.seq_id, b.logits
        n = 0
        outputs: list[tuple[Sequence, int]] = []
        stalled: list[Sequence] = []
        for seq in running:  # one token for every decoding sequence
            if not seq.prefilling:
                if seq.n_past >= seq.slot.cells:  # its reserved cells are used up: reserve more
                    grow = min(GROW_CELLS, seq.reserved - seq.slot.cells)
                    if grow <= 0 or not self._make_room(grow):
                        stalled.append(seq)  # waits until another sequence frees cells
                        continue
                    seq.slot.cells += grow
                    self._reserved += grow
                tok[n] = seq.last_token
                pos[n] = seq.n_past
                nsid[n] = 1
                sid[n][0] = seq.slot.seq_id
                logits[n] = 1
                outputs.append((seq, n))
                seq.n_past += 1
                n += 1
        budget = self.prefill_chunk
        for seq in running:  # then a bounded chunk of prompt tokens, oldest request first
            if budget <= 0:
                break
            if not seq.prefilling:
                continue
            start = seq.n_prefilled
            end = min(len(seq.prompt_ids), start + budget)
            ids, s_id = seq.prompt_ids, seq.slot.seq_id
            for k in range(start, end):
                tok[n] = ids[k]
                pos[n] = k
                nsid[n] = 1
                sid[n][0] = s_id
                logits[n] = 0
                n += 1
            budget -= end - start
            seq.n_prefilled = seq.n_past = end
            if end == len(ids):
                logits[n - 1] = 1
                outputs.append((seq, n - 1))
        if n == 0:
            if stalled:  # every sequence waits for cells no one will free: end the newest one early
                stalled[-1].finish("length")
            return
        b.n_tokens = n
        rc = L.llama_decode(self._ctx, b)
        if rc != 0:
            raise LuodiError(f"llama_decode failed with code {rc}", status=500)
        for seq, idx in outputs:
            logits = None
            if seq.slot.sampler is None or seq.wants_logprobs:  # a view of the logits row, valid until next decode
                logits = np.ctypeslib.as_array(L.llama_get_logits_ith(self._ctx, idx), shape=(self.n_vocab,))
            if seq.slot.sampler is None:
                token = int(logits.argmax())
            else:
                token = L.llama_sampler_sample(seq.slot.sampler, self._ctx, idx)
            seq.accept(token, logits if seq.wants_logprobs else None)

    def shutdown(self) -> None:
        if getattr(self, "_ctx", None):
            L.llama_batch_free(self._batch)
            L.llama_free(self._ctx)
            self._pool.free()
            L.llama_model_free(self._model)
            self._ctx = None
