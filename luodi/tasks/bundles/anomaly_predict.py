"""Score rows with this bundle: `python predict.py rows.csv` (or CSV on stdin; first line: column names; empty cell:
missing). One JSON line per row, as luodi answers: {label, is_anomaly, anomaly_score, scores}."""
import csv
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

HERE = Path(__file__).parent
SPEC = json.loads((HERE / "preprocess.json").read_text())
SESSION = ort.InferenceSession(str(HERE / "model.onnx"), providers=["CPUExecutionProvider"])


def matrix(rows: list) -> np.ndarray:  # standardized numbers (missing: the median), then one-hot categories
    cols = []
    for c, (log1p, median, mean, std) in SPEC["numeric"].items():
        x = np.array([float(v) if (v := (r.get(c) or "").strip()) else np.nan for r in rows])
        x = np.log1p(np.maximum(x, 0)) if log1p else x
        cols.append(np.clip((np.where(np.isnan(x), median, x) - mean) / std, -10, 10))
    for c, values in SPEC["categories"].items():
        cols += [np.array([float((r.get(c) or "").strip() == v) for r in rows]) for v in values]
    return np.stack(cols, 1).astype(np.float32)


def predict(rows: list) -> list:
    ratio = SESSION.run(None, {"input": matrix(rows)})[0].astype(np.float64) / SPEC["threshold"]
    score = 1 - 0.5**ratio  # ratio 1 (the threshold) -> 0.5
    return [{"label": SPEC["labels"][int(s >= 0.5)], "is_anomaly": bool(s >= 0.5), "anomaly_score": float(s),
             "scores": {"autoencoder": float(r)}} for r, s in zip(ratio, score, strict=True)]


if __name__ == "__main__":
    rows = list(csv.DictReader(open(sys.argv[1]) if len(sys.argv) > 1 else sys.stdin))
    for answer in predict(rows) if rows else []:
        print(json.dumps(answer))
