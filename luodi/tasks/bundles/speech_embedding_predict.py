"""Recognise recordings with this bundle: `python predict.py REC.wav ...` or one wav path per line on stdin (JSON
out). PCM wav of any rate; the pretrained speech embedding (two ONNX graphs) and the regression head of head.json."""
import json
import math
import sys
import wave
from pathlib import Path

import numpy as np
import onnxruntime as ort

HERE = Path(__file__).parent
S = json.loads((HERE / "head.json").read_text())
MEL, NET = (ort.InferenceSession(str(HERE / f), providers=["CPUExecutionProvider"])
            for f in ("melspectrogram.onnx", "embedding_model.onnx"))
MEAN, STD, COEF, BIAS = (np.array(S[k], np.float32) for k in ("mean", "std", "coef", "intercept"))  # float32, as luodi


def resample(x: np.ndarray, sr: int, to: int) -> np.ndarray:  # scipy's resample_poly (its Kaiser filter)
    g = math.gcd(sr, to)
    up, down = to // g, sr // g
    if up == down:
        return x
    half = 10 * max(up, down)
    h = np.sinc(np.arange(-half, half + 1) / max(up, down)) * np.kaiser(2 * half + 1, 5.0)
    pre = down - half % down
    n = ((half + pre) // down + np.arange(-(-len(x) * up // down))) * down - pre  # places in the upsampled signal
    j = n[:, None] // up - np.arange(2 * half // up + 2)  # the input samples under the filter there
    ok = (j >= 0) & (j < len(x)) & (n[:, None] - j * up <= 2 * half)
    y = np.where(ok, x[j.clip(0, len(x) - 1)] * h[(n[:, None] - j * up).clip(0, 2 * half)], 0).sum(1)
    return (y * up / h.sum()).astype(np.float32)


def read(path: str) -> np.ndarray:  # mono samples in [-1, 1] at the app's rate
    with wave.open(path) as f:
        c, w, sr = f.getnchannels(), f.getsampwidth(), f.getframerate()
        b = np.frombuffer(f.readframes(f.getnframes()), np.uint8).reshape(-1, c, w)
    x = (b[..., 0] - 128.0) / 128 if w == 1 else np.pad(b, ((0, 0), (0, 0), (4 - w, 0))).view("<i4")[..., 0] / 2**31
    return resample(x.astype(np.float32).mean(1), sr, S["sample_rate"])


def speed(x: np.ndarray, f: float) -> np.ndarray:  # played f times faster (scipy.signal.resample)
    n, m = max(16, round(len(x) / f)), len(x)
    y, k = np.zeros(n // 2 + 1, complex), min(n, m)
    y[: k // 2 + 1] = np.fft.rfft(x)[: k // 2 + 1]
    if k % 2 == 0 and n != m:
        y[k // 2] *= 2 if n < m else 0.5
    return np.fft.irfft(y, n).astype(np.float32) * np.float32(n / m)


def proba(x: np.ndarray) -> np.ndarray:  # the mean window embedding, standardized, through the head
    x = resample(x, S["sample_rate"], 16000) * 32767.0  # the network takes 16 kHz at int16 scale
    pad = np.zeros(max(S["min_samples"], len(x)), np.float32)  # centred in silence
    pad[(len(pad) - len(x)) // 2 :][: len(x)] = x
    m = MEL.run(None, {MEL.get_inputs()[0].name: pad[None]})[0]
    m = m.reshape(-1, m.shape[-1]) / 10.0 + 2.0  # 32-band log-mel frames, scaled as openwakeword does
    wins = np.stack([m[s : s + S["window"]] for s in range(0, len(m) - S["window"] + 1, S["stride"])])
    e = NET.run(None, {NET.get_inputs()[0].name: wins[..., None].astype(np.float32)})[0].reshape(len(wins), -1)
    z = (e.mean(0) - MEAN) / STD @ COEF.T + BIAS
    z = (z - np.logaddexp.reduce(z)) / S["temperature"]
    return np.exp(z - np.logaddexp.reduce(z))


def predict(path: str) -> dict:
    x = read(path)
    p = np.mean([proba(x if f == 1 else speed(x, f)) for f in S["tta_speeds"]], axis=0)
    best = int(p.argmax())
    return {"label": S["labels"][best], "score": float(p[best])}


if __name__ == "__main__":
    for path in sys.argv[1:] or (line.strip() for line in sys.stdin if line.strip()):
        print(json.dumps(predict(path)))
