"""Find entities with this bundle: `python predict.py "text" ...` or one text per line on stdin (JSON out)."""
import json
import re
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

HERE = Path(__file__).parent
SPEC = json.loads((HERE / "tags.json").read_text())
TAGS, WORD = SPEC["tags"], re.compile(SPEC["word_pattern"])
TOKENIZER = Tokenizer.from_file(str(HERE / "tokenizer.json"))
ENCODER, TAGGER = (ort.InferenceSession(str(HERE / f), providers=["CPUExecutionProvider"])
                   for f in ("encoder.onnx", "tagger.onnx"))
START = np.array([-np.inf if t.startswith("I-") else 0.0 for t in TAGS])  # I-X only after B-X or I-X
TRANS = np.array([[-np.inf if b[:2] == "I-" and (a == "O" or a[2:] != b[2:]) else 0.0 for b in TAGS] for a in TAGS])


def casing(w: str) -> int:  # the tagger's classes: lower, upper, title, mixed, digit, has_digit, punct, other
    tests = (w.isdigit(), w.islower(), w.isupper(), w[:1].isupper() and w[1:].islower(),
             any(c.isdigit() for c in w), not any(c.isalnum() for c in w), any(c.isalpha() for c in w))
    return next((k for k, hit in zip((4, 0, 1, 2, 5, 6, 3), tests, strict=True) if hit), 7)


def predict(text: str) -> dict:
    found = list(WORD.finditer(text))
    words = [m.group() for m in found]
    if not words:
        return {"entities": []}
    e = TOKENIZER.encode([w.lower() for w in words], is_pretokenized=True)
    feed = {"input_ids": e.ids, "attention_mask": e.attention_mask, "token_type_ids": e.type_ids}
    hidden = ENCODER.run(None, {k: np.array([v], np.int64) for k, v in feed.items()})[0][0]
    feats = np.zeros((len(words), *hidden.shape[1:]), np.float16)  # each word's first sub-word (float16, as luodi)
    for pos, w in reversed(list(enumerate(e.word_ids))):
        if w is not None:
            feats[w] = hidden[pos]
    c = min(20, max(map(len, words)))
    chars = [[SPEC["chars"].get(k, 1) for k in w[:c]] + [0] * (c - len(w[:c])) for w in words]
    lp = TAGGER.run(None, {"features": feats[None].astype(np.float32), "chars": np.array([chars], np.int64),
                           "case": np.array([[casing(w) for w in words]], np.int64)})[0][0]
    score, back = lp[0] + START, []
    for row in lp[1:]:  # Viterbi over the allowed transitions
        back.append((score[:, None] + TRANS).argmax(0))
        score = (score[:, None] + TRANS).max(0) + row
    path = [int(score.argmax())]
    for b in reversed(back):
        path.insert(0, int(b[path[0]]))
    spans = []
    for i, k in enumerate(path):  # (kind, first word, last word + 1); I-X always continues a B-X here
        if TAGS[k] != "O":
            spans += [[TAGS[k][2:], i, i + 1]] if TAGS[k].startswith("B-") else []
            spans[-1][2] = i + 1
    return {"entities": [{"text": text[found[a].start() : found[b - 1].end()], "label": kind,
                          "start": found[a].start(), "end": found[b - 1].end(),
                          "score": round(float(np.exp(lp[range(a, b), path[a:b]]).mean()), 4)} for kind, a, b in spans]}


if __name__ == "__main__":
    for text in sys.argv[1:] or (line.rstrip("\n") for line in sys.stdin):
        print(json.dumps(predict(text)))
