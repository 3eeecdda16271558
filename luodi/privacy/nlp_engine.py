"""Presidio's NLP engine, run offline on luodi's own NER app instead of a downloaded spaCy model.

Presidio's default engine loads `en_core_web_lg` (downloaded on first use). Here spaCy only tokenizes (a blank
English pipeline, nothing downloaded) and the entities come from a trained luodi token-classification run
(`examples/entity-extraction.yaml`: MiniLM feature tagger on CoNLL-2003), loaded through luodi's predict path
(manifest verified). Presidio's SpacyRecognizer then reports them as PERSON / ORGANIZATION / LOCATION.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import nullcontext
from typing import Any

import spacy
from presidio_analyzer.nlp_engine import NerModelConfiguration, NlpArtifacts, SpacyNlpEngine
from spacy.tokens import Doc
from spacy.util import filter_spans

from luodi.errors import ConfigError, LuodiError, NotFound

LABELS = {"PER": "PERSON", "ORG": "ORGANIZATION", "LOC": "LOCATION"}
TRAIN_HINT = (
    "train it with `luodi train examples/entity-extraction.yaml`, or detect patterns only "
    "(`luodi pii --no-names`, ner_app: null)"
)


def load_ner(app: str, version: str | None = None) -> Any:
    """The trained token-classification task of `app` (its served run, or `version`), as `luodi predict` loads it."""
    from luodi.apps.predict import load_predictor

    try:
        pred = load_predictor(app, version)
    except NotFound as e:
        what = e.message if version else f"app '{app}' has no finished run"
        msg = f"PII names (PERSON, ORGANIZATION, LOCATION) need a trained NER app: {what}; {TRAIN_HINT}"
        raise NotFound(msg, param="ner_app") from None
    if pred.config.task != "token-classification":
        raise ConfigError(
            f"ner_app '{app}' is a {pred.config.task} app; PII names need a token-classification app",
            param="ner_app",
        )
    labels = {t.split("-", 1)[-1] for t in pred.task.tags if t != "O"}
    if not labels & set(LABELS):
        raise ConfigError(f"ner_app '{app}' finds {sorted(labels)}, none of PER / ORG / LOC", param="ner_app")
    return pred.task


def windows(doc: Doc, size: int) -> list[tuple[int, int]]:
    """Character spans covering doc in pieces of at most `size` tokens, cut at sentence ends where one fits (a
    longer sentence is cut every `size` tokens); an empty doc is one empty piece."""
    if len(doc) <= size:
        return [(0, len(doc.text))]
    cuts: list[tuple[int, int]] = []  # token spans
    start = 0
    for sent in doc.sents:
        for a in range(sent.start, sent.end, size):  # a sentence longer than size: its own pieces
            b = min(a + size, sent.end)
            if b - start > size:  # the piece so far is full: close it before this part
                cuts.append((start, a))
                start = a
        # the sentence (or its last part) stays in the open piece
    cuts.append((start, len(doc)))
    return [(doc[a].idx, doc[b - 1].idx + len(doc[b - 1])) for a, b in cuts if b > a]


class LuodiNlpEngine(SpacyNlpEngine):
    """spaCy blank-English tokens + luodi NER entities (`ner` None: tokens only, for pattern-only detection).
    `batch_size` texts go to the NER together: the encoder sorts them by length, so larger batches pad less. Texts
    longer than `window` tokens reach the NER in pieces cut at sentence ends (its encoder reads 512 sub-words)."""

    engine_name = "luodi"

    def __init__(self, ner: Any = None, batch_size: int = 256, window: int = 120):
        config = NerModelConfiguration(
            model_to_presidio_entity_mapping=dict(LABELS),
            labels_to_ignore=["MISC", "O"],
            low_score_entity_names=[],
        )
        super().__init__(models=[{"lang_code": "en", "model_name": "blank:en"}], ner_model_configuration=config)
        self.ner = ner
        self.batch_size = batch_size
        self.window = window

    def load(self) -> None:
        nlp = spacy.blank("en")
        nlp.add_pipe("sentencizer")  # rule-based sentence ends (no model): where long texts are cut for the NER
        self.nlp = {"en": nlp}

    def get_supported_entities(self) -> list[str]:
        return list(LABELS.values()) if self.ner is not None else []

    def _docs(self, texts: list[str], language: str) -> list[Doc]:
        docs, names = self._tokens(texts, language)
        return self._with_names(docs, names())

    def _tokens(self, texts: list[str], language: str, pool: Executor | None = None) -> tuple[list[Doc], Callable]:
        """spaCy docs of `texts` and a function that returns the NER's entities per piece of them (the NER runs in
        `pool` when given, so the caller can go on with the previous texts meanwhile)."""
        if not self.nlp or language not in self.nlp:
            raise LuodiError(f"language '{language}' is not supported; PII detection supports: en", param="language")
        docs = list(self.nlp[language].pipe(texts))
        if self.ner is None:
            return docs, lambda: None
        cuts = [windows(doc, self.window) for doc in docs]
        pieces = [doc.text[a:b] for doc, ws in zip(docs, cuts, strict=True) for a, b in ws]
        if pool is None:
            found = self.ner.predict_texts(pieces, cache=False)  # nothing about the texts is stored
            return docs, lambda: (cuts, found)
        job = pool.submit(self.ner.predict_texts, pieces, cache=False)
        return docs, lambda: (cuts, job.result())

    def _with_names(self, docs: list[Doc], names: tuple | None) -> list[Doc]:
        """`docs` with the NER's entities (and their scores) as doc.ents."""
        if names is None:
            return docs
        cuts, predicted = names
        found = iter(predicted)
        for doc, ws in zip(docs, cuts, strict=True):
            spans, scores = [], {}
            ents = [dict(e, start=e["start"] + a, end=e["end"] + a) for a, _ in ws for e in next(found)["entities"]]
            for ent in ents:
                span = doc.char_span(ent["start"], ent["end"], label=ent["label"], alignment_mode="expand")
                if span is not None:
                    spans.append(span)
                    scores[(span.start, span.end)] = float(ent["score"])
            doc.ents = filter_spans(spans)
            doc.user_data["luodi_scores"] = [scores[(s.start, s.end)] for s in doc.ents]
        return docs

    def _get_scores_for_entities(self, doc: Doc) -> list[float]:
        return list(doc.user_data.get("luodi_scores", []))

    def _doc_to_nlp_artifact(self, doc: Doc, language: str) -> NlpArtifacts:
        art = super()._doc_to_nlp_artifact(doc, language)
        art.lemmas = [t.lower_ for t in doc]  # a blank pipeline has no lemmatizer: context words match lower-cased
        return art

    def process_text(self, text: str, language: str) -> NlpArtifacts:
        return self._doc_to_nlp_artifact(self._docs([text], language)[0], language)

    def process_batch(
        self, texts: Iterable[Any], language: str, batch_size: int = 1, n_process: int = 1, as_tuples: bool = False
    ) -> Iterator[tuple]:
        """Artifacts chunk by chunk; while the caller runs the recognizers over one chunk, the NER reads the next
        in a worker thread (ONNX Runtime and torch release the GIL): the two halves of the work overlap."""
        items = list(texts)
        size = max(batch_size, self.batch_size)
        chunks = [items[k : k + size] for k in range(0, len(items), size)]

        def start(chunk: list[Any]) -> tuple[list[str], list[Doc], Callable]:
            strs = [str(t[0]) if as_tuples else str(t) for t in chunk]
            return (strs, *self._tokens(strs, language, pool))

        # one chunk (a request's few texts) has nothing to overlap with: no worker thread then
        with ThreadPoolExecutor(1, thread_name_prefix="luodi-ner") if len(chunks) > 1 else nullcontext() as pool:
            ahead = start(chunks[0]) if chunks else None
            for k, chunk in enumerate(chunks):
                strs, docs, names = ahead
                ahead = start(chunks[k + 1]) if k + 1 < len(chunks) else None
                for item, text, doc in zip(chunk, strs, self._with_names(docs, names()), strict=True):
                    art = self._doc_to_nlp_artifact(doc, language)
                    yield (text, art, item[1]) if as_tuples else (text, art)
