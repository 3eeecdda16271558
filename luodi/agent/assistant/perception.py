"""What the assistant reads in a customer message: the intent (ranked, with confidence), the entities
(regex) and the best FAQ answer. Intents come from an embedded example set (nearest centroid, sharpened
by the closest example) or from a trained text-classification app such as banking77."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import numpy as np

from luodi import api, rag
from luodi.agent.assistant.options import AssistantOptions
from luodi.agent.faq import DEMO_FAQ, FaqIndex, read_faq
from luodi.embeddings import get_encoder
from luodi.errors import ConfigError


class Perception:
    """Intents, entities and FAQ answers of one assistant app (encoders and indexes built on first use)."""

    def __init__(self, app: str, opts: AssistantOptions):
        self.app = app
        self.opts = opts
        self._lock = threading.Lock()
        self._entity_re = {k: re.compile(v.regex, re.I) for k, v in opts.entities.items()}
        words = opts.abuse.words
        self._abuse = re.compile(r"\b(" + "|".join(map(re.escape, words)) + r")\b", re.I) if words else None
        self._intents: tuple[list[str], np.ndarray, list[np.ndarray]] | None = None
        self._faq: FaqIndex | None = None

    def is_abusive(self, text: str) -> bool:
        return self._abuse is not None and self._abuse.search(text) is not None

    # ----------------------------------------------------------------------------- intents
    def classify(self, text: str) -> list[tuple[str, float]]:
        """Intents ranked by confidence in [0, 1]."""
        if self.opts.intents.app:
            return self._classify_app(text)
        names, cent, examples = self._intent_vectors()
        v = get_encoder(self.opts.encoder).encode([text])[0]
        # nearest centroid, sharpened by the closest example (short, varied example sets)
        scores = [0.5 * float(cent[i] @ v) + 0.5 * float((examples[i] @ v).max()) for i in range(len(names))]
        return sorted(zip(names, scores, strict=True), key=lambda x: -x[1])

    def _intent_vectors(self) -> tuple[list[str], np.ndarray, list[np.ndarray]]:
        with self._lock:
            if self._intents is None:
                names = list(self.opts.intents.items)
                enc = get_encoder(self.opts.encoder)
                ex = [enc.encode(self.opts.intents.items[n].examples) for n in names]
                cent = np.stack([e.mean(0) / (np.linalg.norm(e.mean(0)) + 1e-9) for e in ex])
                self._intents = (names, cent, ex)
        return self._intents

    def _classify_app(self, text: str) -> list[tuple[str, float]]:
        out = api.predict(self.opts.intents.app, [{"text": text}])[0]
        label = str(out.get("label", out.get("prediction", "")))
        score = float(out.get("score", out.get("confidence", out.get("probability", 1.0))) or 0.0)
        for name, it in self.opts.intents.items.items():
            if label in it.labels or label == name:
                return [(name, score)]
        faq = [n for n, it in self.opts.intents.items.items() if it.action == "faq"]
        return [(faq[0], score)] if faq else [("unknown", 0.0)]

    # ----------------------------------------------------------------------------- entities
    def entities(self, text: str) -> dict[str, str]:
        out = {}
        for name, rx in self._entity_re.items():
            m = rx.search(text)
            if m:
                val = m.group(1) if m.groups() else m.group(0)
                norm = self.opts.entities[name].normalize
                out[name] = val.upper() if norm == "upper" else val.lower() if norm == "lower" else val
        return out

    # ----------------------------------------------------------------------------- FAQ
    def faq_answer(self, text: str) -> tuple[str, str, float] | None:
        """(answer, question/source, score) of the best FAQ entry, or None."""
        f = self.opts.faq
        if f.kb:
            hits = rag.search(f.kb, text, k=1).hits
            if not hits:
                return None
            return hits[0].text, str(hits[0].source), float(hits[0].score)
        if not f.folder:
            return None
        hits = self._faq_index(f.folder).search(text, 1)
        if not hits:
            return None
        e, s = hits[0]
        return e.answer, e.question, s

    def _faq_index(self, folder_option: str) -> FaqIndex:
        if self._faq is None:
            folder = DEMO_FAQ if folder_option == "demo:faq" else Path(folder_option).expanduser()
            if not folder.is_dir():
                raise ConfigError(f"{self.app}: options.faq.folder '{folder}' is not a folder", param="faq.folder")
            self._faq = FaqIndex(read_faq(folder), self.opts.encoder)
        return self._faq
