"""`guard.injection` for the server (LUODI_GUARD_INJECTION): chat and completion requests are checked before the
model sees them, replies after it (streamed ones as they grow).

Input: the user's and tools' message texts (or the completion prompt) go through InjectionGuard; the system
message is the operator's and is trusted. Block mode: 400 with code `guard_injection`, naming the message and the
checks that fired; flag mode: the request goes on and the X-Luodi-Guard header names them.
Output: secrets, the system prompt echoed back, PII. Non-streamed: block mode replaces the reply with a notice
(finish_reason content_filter); flag mode keeps it; both name the checks in X-Luodi-Guard-Output. Streamed: the
text is checked as it grows, a small window held back (injection_stream), and a leak ends the stream with a
content_filter chunk that says what was withheld.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from luodi.config import on_off_or_file
from luodi.privacy.injection import InjectionBlocked, InjectionGuard, Verdict
from luodi.privacy.injection_config import InjectionConfig, injection_config
from luodi.privacy.output_guard import WITHHELD, check_output

SETTING = "LUODI_GUARD_INJECTION"
HEADER = "X-Luodi-Guard"
OUTPUT_HEADER = "X-Luodi-Guard-Output"
CHECKED_ROLES = ("user", "tool", "function")


def injection_setting(value: str) -> InjectionConfig | None:
    """The settings of LUODI_GUARD_INJECTION: empty or 'off': none; 'on': the defaults; else a YAML / JSON file of
    InjectionConfig fields. Errors name the setting (and the field)."""
    return injection_config(on_off_or_file(value, SETTING, "injection-guard settings"), where=SETTING)


def guard_from_setting(value: str) -> InjectionGuard | None:
    """The guard of LUODI_GUARD_INJECTION (None: off), its classifier loaded now: a missing one stops the start-up."""
    cfg = injection_setting(value)
    if cfg is None:
        return None
    if "pii" in cfg.output_checks:  # load Presidio's patterns now, not in the first reply (seconds)
        check_output("warm-up reply to warm.up@example.com", cfg, None, ())
    return InjectionGuard(cfg).ready()


def _texts(req: Any) -> list[tuple[str, str]]:
    """(where, text) for the request's untrusted texts: user / tool messages, or the completion prompt."""
    out: list[tuple[str, str]] = []
    for i, m in enumerate(getattr(req, "messages", None) or []):
        if m.role not in CHECKED_ROLES:
            continue
        if isinstance(m.content, str):
            out.append((f"messages[{i}].content", m.content))
        elif isinstance(m.content, list):
            for j, part in enumerate(m.content):
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    out.append((f"messages[{i}].content[{j}].text", part["text"]))
    prompt = getattr(req, "prompt", None)
    if isinstance(prompt, str):
        out.append(("prompt", prompt))
    elif isinstance(prompt, list):
        out += [(f"prompt[{i}]", p) for i, p in enumerate(prompt) if isinstance(p, str)]
    return out


def check_request(req: Any, guard: InjectionGuard) -> dict[str, str]:
    """Check a chat / completion request: raises InjectionBlocked (block mode) or returns the response headers."""
    slots = _texts(req)
    verdicts: list[Verdict] = guard.check([t for _, t in slots]) if slots else []
    hits = [(where, v) for (where, _), v in zip(slots, verdicts, strict=True) if v.injected]
    if not hits:
        return {HEADER: "none"}
    checks = sorted({c for _, v in hits for c in v.checks})
    if guard.cfg.mode == "block":
        where, v = hits[0]
        raise InjectionBlocked(
            f"field '{where}': refused by guard.injection: it looks like a prompt injection (checks: "
            f"{', '.join(v.checks)}; classifier score {v.score}). Rephrase the request, or ask the server's "
            f"operator to relax {SETTING}",
            param=where,
        )
    return {HEADER: "injection:" + ",".join(checks)}


def _system(req: Any) -> str | None:
    msgs = getattr(req, "messages", None) or []
    parts = [m.content for m in msgs if m.role in ("system", "developer") and isinstance(m.content, str)]
    return "\n".join(parts) or None


def check_stream(
    events: AsyncIterator[Any], req: Any, cfg: InjectionConfig
) -> tuple[AsyncIterator[Any], dict[str, str]]:
    """A streamed reply's events after the output checks (injection_stream), with the X-Luodi-Guard-Output header
    (`stream`: the verdict is in the events, the headers leave first)."""
    if not cfg.output_checks:
        return events, {}
    from luodi.privacy.injection_stream import guard_stream

    return guard_stream(events, cfg, _system(req)), {OUTPUT_HEADER: "stream"}


def check_response(body: str, req: Any, cfg: InjectionConfig) -> tuple[str, dict[str, str]]:
    """A non-streamed chat / completion body after the output checks, with the X-Luodi-Guard-Output header."""
    if not cfg.output_checks:
        return body, {}
    data = json.loads(body)
    system = _system(req)
    fired: list[str] = []
    for choice in data.get("choices", []):
        msg = choice.get("message")
        text = msg.get("content") if isinstance(msg, dict) else choice.get("text")
        hits = check_output(text or "", cfg, system) if isinstance(text, str) else []
        if hits and cfg.mode == "block":
            notice = WITHHELD.format(checks=", ".join(hits))
            if isinstance(msg, dict):
                msg["content"] = notice
            else:
                choice["text"] = notice
            choice["finish_reason"] = "content_filter"
        fired += hits
    if not fired:
        return body, {OUTPUT_HEADER: "none"}
    header = ",".join(sorted(set(fired)))
    return (json.dumps(data) if cfg.mode == "block" else body), {OUTPUT_HEADER: header}
