"""Classify texts with this bundle: `python predict.py "text" ...` or one text per line on stdin (JSON out)."""
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

HERE = Path(__file__).parent
SPEC = json.loads((HERE / "labels.json").read_text())
TOKENIZER = Tokenizer.from_file(str(HERE / "tokenizer.json"))
TOKENIZER.enable_truncation(SPEC["max_length"])
SESSION = ort.InferenceSession(str(HERE / "model.onnx"), providers=["CPUExecutionProvider"])


def predict(text: str) -> dict:
    e = TOKENIZER.encode(text)
    feed = {k: np.array([v], np.int64) for k, v in
            (("input_ids", e.ids), ("attention_mask", e.attention_mask), ("token_type_ids", e.type_ids))}
    heads = dict(zip([o.name for o in SESSION.get_outputs()], SESSION.run(None, feed), strict=True))
    lp = sum(w * heads[h][0] for h, w in SPEC["weights"].items())
    p = np.exp(lp - np.logaddexp.reduce(lp))
    best = int(p.argmax())
    if SPEC["oos_label"] and p[best] < SPEC["oos_threshold"]:
        return {"label": SPEC["oos_label"], "score": float(1 - p[best])}
    return {"label": SPEC["labels"][best], "score": float(p[best])}


if __name__ == "__main__":
    for text in sys.argv[1:] or (line.rstrip("\n") for line in sys.stdin):
        print(json.dumps(predict(text)))
