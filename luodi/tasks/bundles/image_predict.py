"""Classify images with this bundle: `python predict.py IMAGE ...` or one image path per line on stdin (JSON out)."""
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

HERE = Path(__file__).parent
SPEC = json.loads((HERE / "labels.json").read_text())
SESSION = ort.InferenceSession(str(HERE / "model.onnx"), providers=["CPUExecutionProvider"])


def pixels(path: str) -> np.ndarray:
    img = Image.open(path).convert("L" if SPEC["channels"] == 1 else "RGB")
    h, w = SPEC["size"]
    if img.size != (w, h):
        img = img.resize((w, h), Image.Resampling.BILINEAR)
    x = np.asarray(img, np.float32) / 255.0
    x = x[None] if x.ndim == 2 else x.transpose(2, 0, 1)
    frame = np.concatenate([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], axis=-1)
    if SPEC["channels"] == 1 and abs(frame.mean() - SPEC["background"]) > 0.5:
        x = 1.0 - x  # dark ink on light paper, for a model trained on light digits on black
    return x


def predict(path: str) -> dict:
    x = ((pixels(path)[None] - SPEC["mean"]) / SPEC["std"]).astype(np.float32)
    p = SESSION.run(None, {"input": x})[0][0]
    best = int(p.argmax())
    return {"label": SPEC["labels"][best], "score": float(p[best])}


if __name__ == "__main__":
    for path in sys.argv[1:] or (line.strip() for line in sys.stdin if line.strip()):
        print(json.dumps(predict(path)))
