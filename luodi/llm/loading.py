"""The server's models, loaded once on first use: the chat engine (through the one engine accessor,
luodi.engines.get_engine, so the server, the CLI, agents and RAG share it) and the sentence encoder."""

from __future__ import annotations

import threading
from typing import Any

from luodi.engines import Engine, engine_options, get_engine
from luodi.errors import LuodiError, Overloaded

_load_lock = threading.Lock()


def ensure_engine(state: Any) -> Engine:
    """The chat engine of a server (a ServerState), with its settings; an engine that cannot load is
    luodi.errors.Overloaded (HTTP 503 naming why), never a 500."""
    if state.engine is None:
        with _load_lock:
            if state.engine is None:
                s = state.settings
                try:
                    engine = get_engine(s.chat_model, s.engine, **engine_options(s, s.engine))
                except LuodiError:
                    raise
                except Exception as e:  # noqa: BLE001 - no usable chat model on this server: say so
                    raise Overloaded(f"the chat engine is not available on this server ({e})") from e
                metrics = state.extra.get("metrics")
                if metrics is not None:
                    metrics.bind_engine_stats(engine.stats)
                state.engine = engine
    return state.engine


def ensure_encoder(state: Any):
    """The server's sentence encoder (a ServerState), loaded once on first use."""
    if state.encoder is None:
        with _load_lock:
            if state.encoder is None:
                from luodi.embeddings import get_encoder

                state.encoder = get_encoder(state.settings.embed_model)
    return state.encoder
