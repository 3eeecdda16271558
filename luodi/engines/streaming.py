"""Incremental text helpers shared by every backend: UTF-8-safe detokenization and stop strings."""

from __future__ import annotations

import codecs


class Utf8Stream:
    """Turns token byte pieces into text, holding back an incomplete multi-byte character."""

    def __init__(self) -> None:
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, piece: bytes) -> str:
        return self._dec.decode(piece)

    def flush(self) -> str:
        """End of output: an incomplete trailing character is dropped rather than shown as U+FFFD."""
        self._dec.reset()
        return ""


class StopFilter:
    """Withholds text that may be the start of a stop string; never releases a stop string's text.

    `feed` returns (text safe to emit, stopped). Stops spanning several tokens are found because the
    held-back tail is kept until it can no longer begin any stop string.
    """

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self._held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        if not self.stops:
            return text, False
        buf = self._held + text
        hits = [i for i in (buf.find(s) for s in self.stops) if i >= 0]
        if hits:
            self._held = ""
            return buf[: min(hits)], True
        keep = 0
        for s in self.stops:  # longest suffix of buf that is a proper prefix of some stop
            for n in range(min(len(s) - 1, len(buf)), keep, -1):
                if buf.endswith(s[:n]):
                    keep = n
                    break
        self._held = buf[len(buf) - keep :] if keep else ""
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        out, self._held = self._held, ""
        return out
