"""The output checks of `guard.injection` on a streamed reply (`stream: true` on /v1/chat/completions and
/v1/completions).

A stream's text leaves piece by piece, so the checks cannot wait for the whole reply as the non-streamed path
does. Instead each choice's text is checked as it grows (every CHECK_EVERY new characters, and when the choice
finishes), and in block mode the events are held back until the text after them is `stream_hold_chars` long and
checked: a secret, a PII value or a copied stretch of the system prompt is found while it is still held, so none
of it is sent. Events are released whole and unchanged (their logprobs too); when a check fires the stream ends
with one chunk per unfinished choice, `finish_reason: content_filter`, the offending one saying what was withheld
(`luodi_guard_output` lists the checks), then `[DONE]`. Flag mode holds nothing back and only names the checks on
the choice's last event.

A stream checks the system prompt more strictly than a whole reply: PARTIAL_PROMPT_GRAMS copied 8-grams count
(output_guard.check_output(partial=True)) at every check, so the verdict does not depend on how the reply was cut.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from luodi.llm.forward import Forwarded
from luodi.privacy.injection_config import InjectionConfig
from luodi.privacy.output_guard import check_output, server_secrets

CHECK_EVERY = 32  # new characters of a choice between two checks (each costs ~0.5-2 ms: PII patterns)
STOPPED = "[luodi guard: the rest of the reply was withheld because it failed the output checks: {checks}]"
FIELD = "luodi_guard_output"  # top-level field naming the checks that fired (the OpenAI client keeps extra fields)


def _piece(choice: dict[str, Any]) -> str:
    """The new text of one streamed choice: a chat delta's content or a completion's text."""
    delta = choice.get("delta")
    text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
    return text if isinstance(text, str) else ""


class _Choice:
    """One choice's text so far, how much of it was checked, and its held events (text end offset, event)."""

    def __init__(self) -> None:
        self.text = ""
        self.checked = 0
        self.finished = False
        self.fired: list[str] = []
        self.pending: deque[tuple[int, Any]] = deque()


def _final(data: dict[str, Any], index: int, chat: bool, text: str, hits: list[str]) -> Forwarded:
    """The last event of a stopped choice, shaped like the stream's own events."""
    out = {k: v for k, v in data.items() if k != "choices"}
    if "usage" in out:
        out["usage"] = None
    choice: dict[str, Any] = {"index": index, "finish_reason": "content_filter", "logprobs": None}
    choice.update({"delta": {"content": text}} if chat else {"text": text})
    out["choices"] = [choice]
    out[FIELD] = hits
    return Forwarded.of(out)


async def guard_stream(events: AsyncIterator[Any], cfg: InjectionConfig, system: str | None) -> AsyncIterator[Any]:
    """`events` (luodi's chunks or an upstream's) after the output checks; closing this closes `events`."""
    block = cfg.mode == "block"
    hold = cfg.stream_hold_chars if block else 0
    known = server_secrets()
    state: dict[int, _Choice] = {}
    try:
        async for ev in events:
            data = ev.dump()
            choices = data.get("choices") or []
            if not choices:  # the usage event: after every choice finished
                yield ev
                continue
            for ch in choices:
                c = state.setdefault(int(ch.get("index", 0)), _Choice())
                c.text += _piece(ch)
                c.finished = c.finished or ch.get("finish_reason") is not None
                c.pending.append((len(c.text), ev if len(choices) == 1 else Forwarded.of({**data, "choices": [ch]})))
                if c.finished or len(c.text) - c.checked >= CHECK_EVERY:
                    hits = await asyncio.to_thread(check_output, c.text, cfg, system, known, True)
                    c.checked = len(c.text)
                    if hits and block:
                        for i, other in sorted(state.items()):
                            if other is c or not other.finished:
                                note = STOPPED.format(checks=", ".join(hits)) if other is c else ""
                                yield _final(data, i, "delta" in ch, note, hits if other is c else [])
                        return
                    c.fired = sorted(set(c.fired) | set(hits))
                limit = len(c.text) if c.finished or not block else c.checked - hold
                while c.pending and c.pending[0][0] <= limit:
                    _, out = c.pending.popleft()
                    if c.fired and not c.pending and c.finished:  # flag mode: the last event names the checks
                        out = Forwarded.of({**out.dump(), FIELD: c.fired})
                    yield out
    finally:
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()
