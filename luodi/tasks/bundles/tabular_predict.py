"""Score rows with this bundle: `python predict.py rows.csv` (or CSV on stdin; first line: column names; empty
cell: missing). One JSON line per row, as luodi answers: {label, probability, probabilities} or {value}."""
import csv
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

HERE = Path(__file__).parent
SPEC = json.loads((HERE / "preprocess.json").read_text())
SESSION = ort.InferenceSession(str(HERE / "model.onnx"), providers=["CPUExecutionProvider"])


def column(rows, feature, how, op):  # one input column of the graph (preprocess.json says how)
    v = [(r.get(feature) or "").strip() for r in rows]
    if op[0] in ("code", "onehot"):
        return np.array([op[1].get(s, np.nan) if op[0] == "code" else float(s == op[1]) for s in v])
    x = np.array([np.nan if s == "" else float(s) if how is None else how["rank"].get(s, np.nan)
                  if "rank" in how else float(s == how["is"]) for s in v])
    if op[0] == "std":
        x = np.log1p(np.maximum(x, 0)) if op[1] else x
        x = np.minimum(np.maximum((np.where(np.isnan(x), op[2], x) - op[3]) / op[4], -10), 10)
    return x


def predict(rows):
    feeds = {k: np.stack([column(rows, *c) for c in cols], 1).astype(np.float32) for k, cols in SPEC["inputs"].items()}
    outs = dict(zip([o.name for o in SESSION.get_outputs()], SESSION.run(None, feeds), strict=True))
    p = 0.0
    for name, (w, renorm) in SPEC["outputs"].items():
        y = outs[name].astype(np.float64).reshape(len(rows), -1)
        p = p + w * (y / y.sum(1, keepdims=True) if renorm else y)
    if SPEC["objective"] == "regression":
        return [{"value": float(v)} for v in p[:, 0]]
    if cal := SPEC["calibration"]:
        q, k = np.clip(p[:, SPEC["positive"]], 1e-6, 1 - 1e-6), SPEC["positive"]
        q = 1 / (1 + np.exp(-(cal["a"] * np.log(q / (1 - q)) + cal["b"]))) if cal["method"] == "sigmoid" \
            else np.interp(p[:, k], cal["x"], cal["y"])
        p[:, k], p[:, 1 - k] = q, 1 - q
    names = SPEC["labels"]
    return [{"label": names[i], "probability": float(r[i]), "probabilities": dict(zip(names, r.tolist(), strict=True))}
            for r, i in zip(p, p.argmax(1), strict=True)]


if __name__ == "__main__":
    rows = list(csv.DictReader(open(sys.argv[1]) if len(sys.argv) > 1 else sys.stdin))
    for answer in predict(rows) if rows else []:
        print(json.dumps(answer))
