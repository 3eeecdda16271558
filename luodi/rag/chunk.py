"""Split text into overlapping chunks of whole sentences, keeping each chunk's character span."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

# A sentence ends at . ! ? (optionally followed by quotes/brackets) before whitespace, or at a line break
# (headings, list items and paragraphs are lines of their own).
_SENT_END = re.compile(r"(?<=[.!?。！？])[\"'”’)\]]*\s+|\s*\n\s*")
_WORD = re.compile(r"\w+|[^\w\s]")


@dataclass(frozen=True)
class Chunk:
    text: str
    start: int  # character span [start, end) in the source text
    end: int


def approx_tokens(text: str) -> int:
    """A tokenizer-free estimate of wordpiece tokens (words and punctuation, long words count more)."""
    return sum(1 + len(w) // 8 for w in _WORD.findall(text))


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of sentences (leading/trailing whitespace excluded)."""
    spans, pos = [], 0
    for m in _SENT_END.finditer(text):
        spans.append((pos, m.start()))
        pos = m.end()
    spans.append((pos, len(text)))
    out = []
    for s, e in spans:
        seg = text[s:e]
        ls = len(seg) - len(seg.lstrip())
        rs = len(seg.rstrip())
        if rs > ls:
            out.append((s + ls, s + rs))
    return out


def _split_long(
    text: str, s: int, e: int, max_tokens: int, count: Callable[[str], int]
) -> list[tuple[int, int]]:
    """Cut an over-long sentence at word boundaries into pieces of at most ~max_tokens."""
    words = [(m.start() + s, m.end() + s) for m in re.finditer(r"\S+", text[s:e])]
    pieces, cur = [], []
    for w in words:
        cur.append(w)
        if count(text[cur[0][0] : cur[-1][1]]) >= max_tokens:
            pieces.append((cur[0][0], cur[-1][1]))
            cur = []
    if cur:
        pieces.append((cur[0][0], cur[-1][1]))
    return pieces


def chunk_text(
    text: str, max_tokens: int = 200, overlap: int = 1, count: Callable[[str], int] = approx_tokens
) -> list[Chunk]:
    """Pack consecutive sentences into chunks of at most `max_tokens`; each chunk repeats the last
    `overlap` sentences of the previous one so an answer on a boundary is whole in some chunk."""
    if max_tokens < 16:
        raise ValueError("max_tokens must be at least 16")
    sents: list[tuple[int, int]] = []
    for s, e in sentence_spans(text):
        if count(text[s:e]) > max_tokens:
            sents.extend(_split_long(text, s, e, max_tokens, count))
        else:
            sents.append((s, e))
    lens = [count(text[s:e]) for s, e in sents]
    chunks: list[Chunk] = []
    i = 0
    while i < len(sents):
        j, total = i, 0
        while j < len(sents) and (j == i or total + lens[j] <= max_tokens):
            total += lens[j]
            j += 1
        s, e = sents[i][0], sents[j - 1][1]
        chunks.append(Chunk(text[s:e], s, e))
        if j >= len(sents):
            break
        i = max(i + 1, j - overlap)
    return chunks
