"""Quality and speed of one GGUF, and of its re-quantized copies: perplexity, prompt and generation tokens/s.

    perplexity("model.gguf", texts, max_tokens=20_000)     # {"perplexity", "tokens", "seconds", ...}
    decode_speed("model.gguf")                            # {"prompt_tok_s", "gen_tok_s", ...}
    quantize_report("model.gguf", ["q8_0", "q4_0"], texts)  # one row per type, the source first

Perplexity is computed over non-overlapping windows of `n_ctx` tokens (BOS first when the model adds one),
every text token of a window scored: the numbers compare weight formats of one model on the same tokens; they
are not llama-perplexity's figures (which score only each window's second half). llama_cpp is imported only
after luodi's CPU-kernel self-check (ggml_cpu.prepare) has passed, as in the engine.
"""

from __future__ import annotations

import ctypes
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from luodi.engines.requantize import REQUANT_TYPES, requantized_gguf
from luodi.errors import BadRequest, ConfigError

SPEED_TEXT = ("The quick brown fox jumps over the lazy dog while the committee reviews the quarterly budget, "
              "the weather service forecasts rain for the weekend and a small cafe serves tea and pastries. ")

_init_lock = threading.Lock()
_initialized = False


def _llama(path: Path, threads: int) -> Any:
    """llama_cpp, imported once luodi's CPU-kernel self-check passed on this model (raises ConfigError)."""
    global _initialized
    from luodi.engines import ggml_cpu

    try:
        ggml_cpu.prepare(path, threads)
    except ggml_cpu.SelfCheckFailed as e:
        raise ConfigError(str(e), param="model") from e
    import llama_cpp as L

    with _init_lock:
        if not _initialized:
            ggml_cpu.quiet_llama_logs()
            L.llama_backend_init()
            _initialized = True
    return L


def _gguf(path: str | Path) -> Path:
    p = Path(path)
    if not p.is_file():
        raise BadRequest(f"GGUF file not found: {p}", param="model")
    return p


@contextmanager
def opened_model(path: str | Path, n_ctx: int, n_batch: int, threads: int | None,
            poll: int = 50) -> Iterator[tuple[Any, Any, Any]]:
    """(llama_cpp, model, context) for one GGUF; freed when the block ends."""
    p = _gguf(path)
    threads = max(1, threads or os.cpu_count() or 1)
    L = _llama(p, threads)
    model = L.llama_model_load_from_file(str(p).encode(), L.llama_model_default_params())
    if not model:
        raise ConfigError(f"llama.cpp could not load '{p}': is it a valid GGUF file?", param="model")
    cp = L.llama_context_default_params()
    cp.n_ctx = n_ctx
    cp.n_batch = cp.n_ubatch = n_batch
    cp.n_seq_max = 1
    cp.n_threads = cp.n_threads_batch = threads
    cp.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_ENABLED  # as the engine runs it
    cp.no_perf = True
    ctx = L.llama_init_from_model(model, cp)
    if not ctx:
        L.llama_model_free(model)
        raise ConfigError(f"llama.cpp could not create a context of {n_ctx} tokens for '{p}'", param="n_ctx")
    from luodi.engines.threadpool import ThreadPool

    pool = ThreadPool(threads, poll=poll)  # the engine's persistent worker threads
    pool.attach(ctx)
    try:
        yield L, model, ctx
    finally:
        L.llama_free(ctx)
        pool.free()
        L.llama_model_free(model)


def _tokenize(L: Any, vocab: Any, text: str) -> list[int]:
    data = text.encode("utf-8")
    cap = len(data) + 16
    arr = (L.llama_token * cap)()
    n = L.llama_tokenize(vocab, data, len(data), arr, cap, False, False)
    if n < 0:
        arr = (L.llama_token * -n)()
        n = L.llama_tokenize(vocab, data, len(data), arr, -n, False, False)
    return list(arr[:n])


def decode_tokens(L: Any, ctx: Any, batch: Any, tokens: list[int], start: int, all_logits: bool) -> None:
    """One llama_decode of `tokens` at positions start.. (sequence 0); logits for every token or the last."""
    n = len(tokens)
    for i, tok in enumerate(tokens):
        batch.token[i] = tok
        batch.pos[i] = start + i
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = 0
        batch.logits[i] = all_logits or i == n - 1
    batch.n_tokens = n
    rc = L.llama_decode(ctx, batch)
    if rc != 0:
        raise ConfigError(f"llama_decode failed with code {rc}", param="model")


def _model_type(L: Any, model: Any) -> str:
    buf = ctypes.create_string_buffer(64)
    n = L.llama_model_meta_val_str(model, b"general.file_type", buf, len(buf))
    if n < 0:
        return "unknown"
    code = int(buf.value.decode())
    for name in dir(L):
        if name.startswith("LLAMA_FTYPE_") and getattr(L, name) == code:
            return name.removeprefix("LLAMA_FTYPE_").removeprefix("MOSTLY_").removeprefix("ALL_").lower()
    return f"file_type {code}"


def gguf_type(gguf_path: str | Path, threads: int | None = None) -> str:
    """A GGUF's weight format as llama.cpp names it (e.g. 'q4_1', 'q8_0', 'f16'), from its metadata."""
    p = _gguf(gguf_path)
    L = _llama(p, max(1, threads or os.cpu_count() or 1))
    mp = L.llama_model_default_params()
    mp.vocab_only = True
    model = L.llama_model_load_from_file(str(p).encode(), mp)
    if not model:
        raise ConfigError(f"llama.cpp could not load '{p}': is it a valid GGUF file?", param="model")
    try:
        return _model_type(L, model)
    finally:
        L.llama_model_free(model)


def perplexity(gguf_path: str | Path, texts: Iterable[str], *, n_ctx: int = 512, max_tokens: int = 20_000,
               threads: int | None = None) -> dict[str, Any]:
    """Perplexity of a GGUF over the first `max_tokens` scored tokens of `texts` (joined by blank lines).

    Returns {"perplexity", "nll" (mean, nats), "tokens" (scored), "windows", "n_ctx", "seconds", "tok_s"}.
    """
    if max_tokens < 1:
        raise BadRequest("max_tokens must be at least 1", param="max_tokens")
    n_ctx = max(16, n_ctx)
    with opened_model(gguf_path, n_ctx, n_ctx, threads) as (L, model, ctx):
        vocab = L.llama_model_get_vocab(model)
        n_vocab = int(L.llama_vocab_n_tokens(vocab))
        bos = int(L.llama_vocab_bos(vocab))
        lead = [bos] if bos >= 0 and L.llama_vocab_get_add_bos(vocab) else []
        per_window = n_ctx - len(lead) - (0 if lead else 1)  # text tokens scored per window
        need = max_tokens + (0 if lead else -(-max_tokens // per_window))
        ids: list[int] = []
        for text in texts:
            if not text.strip():
                continue
            ids += _tokenize(L, vocab, text + "\n\n")
            if len(ids) >= need:
                break
        ids = ids[:need]
        if len(ids) < (1 if lead else 2):
            raise BadRequest("no text to score: the texts hold no tokens", param="texts")
        mem = L.llama_get_memory(ctx)
        batch = L.llama_batch_init(n_ctx, 0, 1)
        nll, scored, windows = 0.0, 0, 0
        started = time.perf_counter()
        try:
            step = n_ctx - len(lead)
            for at in range(0, len(ids), step):
                window = lead + ids[at: at + step]
                if len(window) < 2:
                    break
                L.llama_memory_clear(mem, True)
                decode_tokens(L, ctx, batch, window, 0, True)
                n = len(window)
                logits = np.ctypeslib.as_array(L.llama_get_logits(ctx), shape=(n, n_vocab))[: n - 1]
                targets = np.asarray(window[1:], dtype=np.int64)
                top = logits.max(axis=1, keepdims=True)
                shifted = logits - top
                picked = shifted[np.arange(n - 1), targets].astype(np.float64)
                np.exp(shifted, out=shifted)
                nll += float((np.log(shifted.sum(axis=1, dtype=np.float64)) - picked).sum())
                scored += n - 1
                windows += 1
        finally:
            L.llama_batch_free(batch)
        seconds = time.perf_counter() - started
    mean = nll / scored
    return {"perplexity": float(np.exp(mean)), "nll": mean, "tokens": scored, "windows": windows, "n_ctx": n_ctx,
            "seconds": round(seconds, 3), "tok_s": round(scored / seconds, 1)}


def decode_speed(gguf_path: str | Path, *, n_prompt: int = 512, n_gen: int = 128, repeats: int = 3,
                 threads: int | None = None, clock: str = "wall") -> dict[str, Any]:
    """Prompt processing (one batch of `n_prompt` tokens) and single-stream greedy generation (`n_gen` tokens,
    one decode each) in tokens/s: the median of `repeats` timed runs after one warm-up.

    clock "wall" times what a user waits; "cpu" (threads=1 only) times the decoding thread's own CPU seconds,
    which other processes on a busy machine do not inflate."""
    n_prompt, n_gen, repeats = max(1, n_prompt), max(1, n_gen), max(1, repeats)
    if clock not in ("wall", "cpu"):
        raise BadRequest(f"clock must be 'wall' or 'cpu', not {clock!r}", param="clock")
    if clock == "cpu" and threads != 1:
        raise BadRequest("clock 'cpu' measures one thread: give threads=1", param="clock")
    now = time.thread_time if clock == "cpu" else time.perf_counter
    with opened_model(gguf_path, n_prompt + n_gen + 8, n_prompt, threads) as (L, model, ctx):
        vocab = L.llama_model_get_vocab(model)
        n_vocab = int(L.llama_vocab_n_tokens(vocab))
        seed = _tokenize(L, vocab, SPEED_TEXT)
        prompt = (seed * (n_prompt // len(seed) + 1))[:n_prompt]
        mem = L.llama_get_memory(ctx)
        batch = L.llama_batch_init(n_prompt, 0, 1)

        def prefill() -> float:
            L.llama_memory_clear(mem, True)
            t = now()
            decode_tokens(L, ctx, batch, prompt, 0, False)
            return now() - t

        def generate(count: int) -> float:
            L.llama_memory_clear(mem, True)
            decode_tokens(L, ctx, batch, prompt[:1], 0, False)
            t = now()
            for pos in range(1, count + 1):
                logits = np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))
                decode_tokens(L, ctx, batch, [int(logits.argmax())], pos, False)
            return now() - t

        try:
            prefill()
            generate(min(8, n_gen))
            pp = [prefill() for _ in range(repeats)]
            tg = [generate(n_gen) for _ in range(repeats)]
        finally:
            L.llama_batch_free(batch)
    return {"prompt_tok_s": round(n_prompt / statistics.median(pp), 1),
            "gen_tok_s": round(n_gen / statistics.median(tg), 1),
            "n_prompt": n_prompt, "n_gen": n_gen, "repeats": repeats,
            "threads": max(1, threads or os.cpu_count() or 1), "clock": clock}


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def quantize_report(source_gguf: str | Path, types: Iterable[str], texts: Iterable[str] | None, *,
                    max_tokens: int = 20_000, n_ctx: int = 512, n_prompt: int = 512, n_gen: int = 128,
                    repeats: int = 3, threads: int | None = None, clock: str = "wall",
                    progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Re-quantize a GGUF to each of `types` (requantized_gguf, cached) and measure every copy like the source.

    Rows, the source first: type, path, file_mb, perplexity, ppl_delta_pct (vs the source), tokens, prompt_tok_s,
    gen_tok_s, prompt_ratio and gen_ratio (vs the source). Without `texts` the perplexity columns are None.
    `threads` and `clock` go to decode_speed (and threads to perplexity).
    """
    src = _gguf(source_gguf)
    names = list(dict.fromkeys(t.strip().lower() for t in types if t.strip()))
    bad = [t for t in names if t not in REQUANT_TYPES]
    if bad or not names:
        raise ConfigError(f"unknown weight format {', '.join(repr(t) for t in bad) or '(none given)'}; "
                          f"choose from: {', '.join(REQUANT_TYPES)}", param="type")
    if clock == "cpu" and threads != 1:
        raise BadRequest("clock 'cpu' measures one thread: give threads=1", param="clock")
    say = progress or (lambda _msg: None)
    threads = max(1, threads or os.cpu_count() or 1)
    _llama(src, threads)  # the CPU-kernel self-check before llama.cpp quantizes anything
    text_list = list(texts) if texts is not None else None
    targets: list[tuple[str, Path, bool]] = [(gguf_type(src, threads), src, True)]
    for name in names:
        say(f"{name}: re-quantizing {src.name}")
        targets.append((name, requantized_gguf(src, name), False))
    rows: list[dict[str, Any]] = []
    for name, path, is_source in targets:
        row: dict[str, Any] = {"type": name, "source": is_source, "path": str(path),
                               "file_mb": round(path.stat().st_size / 2**20, 1)}
        if text_list is not None:
            say(f"{name}: perplexity over {max_tokens} tokens")
            ppl = perplexity(path, text_list, n_ctx=n_ctx, max_tokens=max_tokens, threads=threads)
            row.update(perplexity=round(ppl["perplexity"], 4), tokens=ppl["tokens"], eval_seconds=ppl["seconds"])
        else:
            row.update(perplexity=None, tokens=0, eval_seconds=None)
        say(f"{name}: speed ({n_prompt}-token prompt, {n_gen} generated tokens, {repeats} runs)")
        speed = decode_speed(path, n_prompt=n_prompt, n_gen=n_gen, repeats=repeats, threads=threads, clock=clock)
        row.update(prompt_tok_s=speed["prompt_tok_s"], gen_tok_s=speed["gen_tok_s"])
        rows.append(row)
    base = rows[0]
    for row in rows:
        row["ppl_delta_pct"] = (round(100 * (row["perplexity"] / base["perplexity"] - 1), 2)
                                if row["perplexity"] and base["perplexity"] else None)
        row["prompt_ratio"] = _ratio(row["prompt_tok_s"], base["prompt_tok_s"])
        row["gen_ratio"] = _ratio(row["gen_tok_s"], base["gen_tok_s"])
    return rows
