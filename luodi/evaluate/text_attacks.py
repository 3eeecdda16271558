"""Word-substitution attacks on a text classifier, queried as a black box (its probabilities only).

Why this shape: a text app's input is words, so the honest "small change" is a few words swapped for near
neighbours, not a perturbation of floating-point embeddings that no user could type. The attack here is a
budgeted greedy search in the spirit of TextFooler (Jin et al. 2020), with no download:
- word importance by drop-one: how much the probability of the true label falls when the word is deleted;
- candidates for a word: its nearest neighbours (cosine) among the whole-word entries of an encoder's word-piece
  input-embedding table (`Neighbours`; for luodi's text apps the bundled MiniLM's), stop words never touched;
- in order of importance, each word is replaced by the candidate that lowers the true label's probability most
  (when one does), until the label changes or the budget is spent;
- the budget is a share of the text's words (eps 0.1: up to 10 % of the words, at least one).
The greedy path does not depend on the budget until the budget stops it, so one run at the largest budget gives
the whole curve: a text is fooled at budget b when its label changed after at most b's number of changes.
Only the model's answers are used (`probe`): the served predictor, its TF-IDF head included, is what is attacked.
Everything here takes plain callables and arrays (no app, no task), so tests, the audit and the bench call it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from luodi.errors import ConfigError

WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")
WHOLE = re.compile(r"[a-z]{2,}")
# probe(texts, truths) -> (predicted label per text, probability of the truth per text)
Probe = Callable[[list[str], list[str]], tuple[np.ndarray, np.ndarray]]


def stop_words() -> frozenset[str]:
    """Function words never substituted (changing 'not' or 'my' changes what the text says): scikit-learn's
    English list, bundled with it (no download)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


@dataclass
class Neighbours:
    """Nearest whole words (cosine of input embeddings) of a vocabulary word; words outside the vocabulary
    (split into word pieces) have none."""

    words: list[str]  # the whole-word vocabulary entries
    unit: np.ndarray  # their embeddings, L2-normalized, (len(words), dim)
    k: int = 10
    min_cosine: float = 0.4
    index: dict[str, int] = field(default_factory=dict)
    _memo: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_table(cls, vocab: Sequence[str], table: np.ndarray, k: int = 10, min_cosine: float = 0.4) -> Neighbours:
        """`vocab[i]` is the token of row i of `table` (an encoder's input embeddings); only lowercase alphabetic
        entries of two letters or more are kept (no '##' word pieces, no special or unused tokens)."""
        keep = [i for i, t in enumerate(vocab) if WHOLE.fullmatch(t)]
        rows = np.asarray(table, np.float32)[keep]
        unit = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
        words = [vocab[i] for i in keep]
        return cls(words, unit, k, min_cosine, {w: j for j, w in enumerate(words)})

    def of(self, word: str) -> list[str]:
        """Up to `k` neighbours with cosine >= `min_cosine`, closest first, in the word's capitalization."""
        low = word.lower()
        if low not in self._memo:
            j = self.index.get(low)
            if j is None:
                self._memo[low] = []
            else:
                sims = self.unit @ self.unit[j]
                sims[j] = -1.0
                top = np.argsort(-sims)[: self.k]
                self._memo[low] = [self.words[i] for i in top if sims[i] >= self.min_cosine]
        out = self._memo[low]
        if word[:1].isupper():
            return [w.upper() if word.isupper() and len(word) > 1 else w.capitalize() for w in out]
        return list(out)


def words_of(text: str) -> list[tuple[int, int]]:
    """Character spans of the text's words (letters, with an inner apostrophe)."""
    return [m.span() for m in WORD.finditer(text)]


def budget(n_words: int, share: float) -> int:
    """How many words a budget of `share` lets the attack change: floor(share x words), at least one (0 for 0)."""
    return 0 if share <= 0 else max(1, math.floor(share * n_words + 1e-9))


def _replace(text: str, span: tuple[int, int], word: str) -> str:
    return text[: span[0]] + word + text[span[1] :]


def _drop(text: str, span: tuple[int, int]) -> str:
    return re.sub(r"\s{2,}", " ", _replace(text, span, "")).strip() or text


@dataclass
class Attacked:
    """One text's greedy path: the text after each change, the changes, and after how many the label moved."""

    text: str
    truth: str
    clean_label: str
    n_words: int
    states: list[str]  # states[0] = text, states[i] = after i changes
    changes: list[tuple[int, str, str]] = field(default_factory=list)  # (word position, old, new)
    labels: list[str] = field(default_factory=list)  # label after each state
    fooled_after: int | None = None  # changes needed to move the label off the truth (None: not within budget)
    p_truth: float = 1.0  # the truth's probability in the last state (what the greedy step must lower)

    def at(self, share: float) -> tuple[str, str, list[tuple[int, str, str]]]:
        """(text, label, changes) under a budget of `share` of the words."""
        m = min(budget(self.n_words, share), len(self.changes))
        return self.states[m], self.labels[m], self.changes[:m]


def attack_texts(
    probe: Probe,
    texts: Sequence[str],
    truths: Sequence[str],
    neighbours: Neighbours,
    max_share: float,
    *,
    protected: frozenset[str] | None = None,
    batch: int = 1024,
) -> list[Attacked]:
    """Greedy word substitution on every text, up to `max_share` of its words changed (see the module docstring).
    Texts the model already gets wrong are not attacked (they count as wrong at every budget)."""
    if max_share < 0 or max_share > 1:
        raise ConfigError(f"--eps for a text app is a share of the words in [0, 1] (got {max_share})", param="eps")
    protected = stop_words() if protected is None else protected
    texts, truths = [str(t) for t in texts], [str(t) for t in truths]
    labels, _ = _probe(probe, texts, truths, batch)
    out = [
        Attacked(t, y, str(lab), len(words_of(t)), [t], labels=[str(lab)])
        for t, y, lab in zip(texts, truths, labels, strict=True)
    ]
    for a in out:
        if a.clean_label != a.truth:
            a.fooled_after = 0
    live = [a for a in out if a.fooled_after is None and budget(a.n_words, max_share) > 0]
    order = _importance(probe, live, neighbours, protected, batch)
    step = 0
    while live:
        # one queried batch per round: for each live text, every candidate for its next important word
        queries, owners = [], []
        for a in live:
            pos = order[id(a)][step] if step < len(order[id(a)]) else None
            if pos is None:
                continue
            span = words_of(a.states[-1])[pos]
            old = a.states[-1][span[0] : span[1]]
            for new in neighbours.of(old):
                queries.append(_replace(a.states[-1], span, new))
                owners.append((a, pos, old, new))
        if not queries:
            break
        got_labels, got_p = _probe(probe, queries, [o[0].truth for o in owners], batch)
        best: dict[int, tuple[float, int]] = {}
        for i, (a, *_rest) in enumerate(owners):
            key = -1.0 if got_labels[i] != a.truth else float(got_p[i])  # a moved label beats any probability
            if id(a) not in best or key < best[id(a)][0]:
                best[id(a)] = (key, i)
        for a in live:
            if id(a) not in best:
                continue
            key, i = best[id(a)]
            if key >= a.p_truth:  # no candidate lowers the truth's probability: leave the word alone
                continue
            _, pos, old, new = owners[i]
            a.states.append(queries[i])
            a.changes.append((pos, old, new))
            a.labels.append(str(got_labels[i]))
            a.p_truth = key
            if got_labels[i] != a.truth:
                a.fooled_after = len(a.changes)
        step += 1
        live = [
            a
            for a in live
            if a.fooled_after is None and len(a.changes) < budget(a.n_words, max_share) and step < len(order[id(a)])
        ]
    return out


def _probe(probe: Probe, texts: list[str], truths: list[str], batch: int) -> tuple[np.ndarray, np.ndarray]:
    labels, probs = [], []
    for i in range(0, len(texts), batch):
        lab, p = probe(texts[i : i + batch], truths[i : i + batch])
        labels.append(np.asarray(lab, dtype=object))
        probs.append(np.asarray(p, dtype=np.float64))
    if not labels:
        return np.zeros(0, dtype=object), np.zeros(0)
    return np.concatenate(labels), np.concatenate(probs)


def _importance(
    probe: Probe, texts: list[Attacked], neighbours: Neighbours, protected: frozenset[str], batch: int
) -> dict[int, list[int]]:
    """Per text, the positions of its substitutable words (not protected, with neighbours), most important
    first: importance = fall of the truth's probability when the word is deleted (drop-one)."""
    queries, owners = [], []
    for a in texts:
        for pos, span in enumerate(words_of(a.text)):
            word = a.text[span[0] : span[1]]
            if word.lower() in protected or not neighbours.of(word):
                continue
            queries.append(_drop(a.text, span))
            owners.append((a, pos))
    _, dropped = _probe(probe, queries, [o[0].truth for o in owners], batch)
    _, base_p = _probe(probe, [a.text for a in texts], [a.truth for a in texts], batch)
    base = {id(a): float(p) for a, p in zip(texts, base_p, strict=True)}
    for a in texts:
        a.p_truth = base[id(a)]
    ranked: dict[int, list[tuple[float, int]]] = {id(a): [] for a in texts}
    for (a, pos), p in zip(owners, dropped, strict=True):
        ranked[id(a)].append((base[id(a)] - float(p), pos))
    return {k: [pos for _, pos in sorted(v, key=lambda t: -t[0])] for k, v in ranked.items()}


def changed_words(original: str, attacked: str) -> int:
    """Positions whose word differs (substitutions keep the number of words)."""
    a = [original[s:e] for s, e in words_of(original)]
    b = [attacked[s:e] for s, e in words_of(attacked)]
    if len(a) != len(b):
        return max(len(a), len(b))
    return sum(x != y for x, y in zip(a, b, strict=True))


def curve(attacked: Sequence[Attacked], shares: Sequence[float]) -> list[dict[str, float]]:
    """Accuracy at each budget (share 0: clean) and the mean share of words actually changed there."""
    rows = []
    for s in shares:
        right, changed = 0, []
        for a in attacked:
            text, label, changes = a.at(s)
            right += int(label == a.truth)
            if a.clean_label == a.truth:
                changed.append(len(changes) / max(1, a.n_words))
        rows.append(
            {
                "eps": float(s),
                "accuracy": right / max(1, len(attacked)),
                "mean_changed_share": float(np.mean(changed)) if changed else 0.0,
            }
        )
    return rows


def marked(a: Attacked, share: float) -> str:
    """The attacked text with each changed word shown as [old -> new]."""
    text, _, changes = a.at(share)
    spans = words_of(text)
    out, last = [], 0
    for pos, old, new in sorted(changes):
        s, e = spans[pos]
        out += [text[last:s], f"[{old} -> {new}]"]
        last = e
    return "".join(out) + text[last:]
