"""What a running server holds: settings, the chat engine and the encoder, loaded once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from luodi.settings import Settings


@dataclass
class ServerState:
    settings: Settings
    engine: Any = None  # luodi.engines.base.Engine
    encoder: Any = None  # luodi.embeddings.Encoder
    extra: dict[str, Any] = field(default_factory=dict)  # per-feature caches (apps, kb indexes, ...)


def get_state(request) -> ServerState:
    return request.app.state.luodi
