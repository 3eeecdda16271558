"""A question/answer FAQ from markdown files ('## Question?' then the answer), searched by meaning."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

DEMO_FAQ = Path(__file__).resolve().parents[1] / "demo" / "faq"


@dataclass(frozen=True)
class FaqEntry:
    question: str
    answer: str
    source: str


def read_faq(folder: str | Path) -> list[FaqEntry]:
    """Every '## question' section of every *.md file in folder (sorted for stable order)."""
    out: list[FaqEntry] = []
    for f in sorted(Path(folder).glob("*.md")):
        parts = re.split(r"^##\s+(.+?)\s*$", f.read_text(encoding="utf-8"), flags=re.M)
        for q, a in zip(parts[1::2], parts[2::2], strict=True):
            answer = " ".join(a.split())
            if answer:
                out.append(FaqEntry(q.strip(), answer, f.name))
    return out


class FaqIndex:
    """Nearest FAQ entries by embedding similarity (question and answer both indexed; max wins)."""

    def __init__(self, entries: list[FaqEntry], encoder_spec: str = "bundled:minilm-l6"):
        from luodi.embeddings import get_encoder

        self.entries = entries
        self.encoder = get_encoder(encoder_spec)
        self._lock = threading.Lock()
        q = self.encoder.encode([e.question for e in entries])
        a = self.encoder.encode([e.question + " " + e.answer for e in entries])
        self.q, self.a = q, a

    def search(self, query: str, k: int = 3) -> list[tuple[FaqEntry, float]]:
        if not self.entries:
            return []
        v = self.encoder.encode([query])[0]
        scores = np.maximum(self.q @ v, self.a @ v)
        order = np.argsort(-scores)[:k]
        return [(self.entries[i], float(scores[i])) for i in order]


@lru_cache(maxsize=8)
def get_faq(folder: str = str(DEMO_FAQ)) -> FaqIndex:
    return FaqIndex(read_faq(folder))
