"""Recognise recordings with this bundle: `python predict.py REC.wav ...` or one wav path per line on stdin (JSON
out). PCM wav of any rate; the log-mel features are luodi's, computed with numpy from preprocess.json."""
import json
import math
import sys
import wave
from pathlib import Path

import numpy as np
import onnxruntime as ort

HERE = Path(__file__).parent
S = json.loads((HERE / "preprocess.json").read_text())
SESSION = ort.InferenceSession(str(HERE / "model.onnx"), providers=["CPUExecutionProvider"])
WINDOW, MEL, CEPSTRAL = np.array(S["window"]), np.array(S["mel"]), S["cepstral"] and np.array(S["cepstral"])


def read(path: str) -> np.ndarray:  # mono samples in [-1, 1] at the model's rate (scipy's resample_poly)
    with wave.open(path) as f:
        c, w, sr = f.getnchannels(), f.getsampwidth(), f.getframerate()
        b = np.frombuffer(f.readframes(f.getnframes()), np.uint8).reshape(-1, c, w)
    x = (b[..., 0] - 128.0) / 128 if w == 1 else np.pad(b, ((0, 0), (0, 0), (4 - w, 0))).view("<i4")[..., 0] / 2**31
    x = x.astype(np.float32).mean(1)
    g = math.gcd(sr, S["sample_rate"])
    up, down = S["sample_rate"] // g, sr // g
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


def speed(x: np.ndarray, f: float) -> np.ndarray:  # played f times faster (scipy.signal.resample)
    n, m = max(16, round(len(x) / f)), len(x)
    y, k = np.zeros(n // 2 + 1, complex), min(n, m)
    y[: k // 2 + 1] = np.fft.rfft(x)[: k // 2 + 1]
    if k % 2 == 0 and n != m:
        y[k // 2] *= 2 if n < m else 0.5
    return np.fft.irfft(y, n) * n / m


def features(x: np.ndarray) -> np.ndarray:  # luodi.data.audio.utterance_features
    n_fft, hop = len(WINDOW), S["hop"]
    x = np.pad(np.pad(x, (0, max(0, S["win"] - len(x)))), n_fft // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * WINDOW
    m = np.log(MEL @ (np.abs(np.fft.rfft(frames)) ** 2).T + 1e-6)
    if S["trim_db"] > 0 and m.shape[1] > 3:
        e = np.log(np.exp(m).sum(0) + 1e-10) * (10 / np.log(10))
        loud = np.flatnonzero(e >= e.max() - S["trim_db"])
        lo, hi = int(loud[0]), int(loud[-1]) + 1
        lo, hi = (max(0, (lo + hi) // 2 - 1), min(m.shape[1], (lo + hi) // 2 + 2)) if hi - lo < 3 else (lo, hi)
        m = m[:, lo:hi]
    if S["floor_db"] > 0:
        m = np.maximum(m, m.max() - S["floor_db"] * np.log(10) / 10)
    m = m if CEPSTRAL is None else CEPSTRAL @ m
    m = m - m.mean(1, keepdims=True)
    m = m / (m.std(1, keepdims=True) + 0.1) if S["normalize"] == "cmvn" else m / (m.std() + 1e-5)
    t, n = m.shape[1], S["frames"]
    if S["fit"] == "resize":
        return np.stack([np.interp(np.linspace(0, t - 1, n), np.arange(t), row) for row in m])
    return m[:, (t - n) // 2:][:, :n] if t >= n else np.pad(m, ((0, 0), ((n - t) // 2, n - t - (n - t) // 2)))


def predict(path: str) -> dict:
    x = read(path)
    grids = [features(x if f == 1 else speed(x, f))[None, None].astype(np.float32) for f in S["tta_speeds"]]
    p = np.mean([SESSION.run(None, {"input": g})[0][0] for g in grids], axis=0)
    best = int(p.argmax())
    return {"label": S["labels"][best], "score": float(p[best])}


if __name__ == "__main__":
    for path in sys.argv[1:] or (line.strip() for line in sys.stdin if line.strip()):
        print(json.dumps(predict(path)))
