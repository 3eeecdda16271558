"""Audio datasets and features: folders of wav files (labels from file names or class folders), log-mel.

Log-mel spectrograms are computed with torch.stft and a mel filterbank built here (no torchaudio).
"""

from __future__ import annotations

import base64
import io
import re
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from luodi.errors import BadRequest, ConfigError

# FSDD-style names: {label}_{speaker}_{index}.wav, e.g. 7_jackson_32.wav
DEFAULT_PATTERN = r"^(?P<label>[^_]+)_(?P<speaker>[^_]+)_(?P<index>\d+)$"


@dataclass
class AudioSet:
    """Mono waveforms (float32 in [-1, 1]) at one sample rate, with labels, speakers and file names."""

    waves: list[np.ndarray]
    labels: list[Any]
    speakers: list[str | None]
    names: list[str]
    sample_rate: int

    def __len__(self) -> int:
        return len(self.waves)

    def subset(self, idx: Any) -> AudioSet:
        idx = [int(i) for i in idx]
        return AudioSet(
            [self.waves[i] for i in idx],
            [self.labels[i] for i in idx],
            [self.speakers[i] for i in idx],
            [self.names[i] for i in idx],
            self.sample_rate,
        )


def decode_wav(data: bytes, field: str = "audio", name: str | None = None) -> tuple[np.ndarray, int]:
    """WAV bytes -> (mono float32 samples in [-1, 1], sample rate); `name`: their file, for error messages."""
    from scipy.io import wavfile

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy warns about unknown chunks (e.g. LIST metadata)
            sr, x = wavfile.read(io.BytesIO(data))
    except (ValueError, EOFError, OSError) as e:
        what = f"'{field}' ({name})" if name else f"'{field}'"
        raise BadRequest(f"{what} is not a readable WAV file ({e}); send a PCM .wav", param=field) from e
    if x.dtype.kind == "i" or x.dtype.kind == "u":
        info = np.iinfo(x.dtype)
        x = (x.astype(np.float32) - (info.max + info.min + 1) / 2) / ((info.max - info.min + 1) / 2)
    x = x.astype(np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if x.size == 0:
        raise BadRequest(f"'{field}': the WAV file{f' {name}' if name else ''} holds no samples", param=field)
    return x, int(sr)


def resample(x: np.ndarray, sr: int, target: int) -> np.ndarray:
    """Polyphase resampling to `target` Hz."""
    if sr == target:
        return x
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(sr, target)
    return resample_poly(x, target // g, sr // g).astype(np.float32)


def read_wav_dir(root: Path, sample_rate: int, pattern: str | None = None) -> AudioSet:
    """Every .wav under `root`. Labels (and speakers) come from the file name via `pattern`
    (a regex with named groups `label` and optionally `speaker`, matched against the name without
    .wav), or, for files in sub-folders that do not match it, from the sub-folder name."""
    rx = re.compile(pattern or DEFAULT_PATTERN)
    files = sorted(root.rglob("*.wav")) if root.is_dir() else [root]
    if not files:
        raise ConfigError(f"'data.path': no .wav files in {root}; expected a folder of wav recordings")
    waves, labels, speakers, names = [], [], [], []
    for f in files:
        m = rx.match(f.stem)
        if m and "label" in m.groupdict():
            label, speaker = m.group("label"), m.groupdict().get("speaker")
        elif f.parent != root and root.is_dir():
            label, speaker = f.parent.name, None
        else:
            label, speaker = None, None
        x, sr = decode_wav(f.read_bytes(), field=str(f))
        waves.append(resample(x, sr, sample_rate))
        labels.append(label)
        speakers.append(speaker)
        names.append(f.name)
    return AudioSet(waves, labels, speakers, names, sample_rate)


def audio_from_value(
    value: Any, sample_rate: int, given_rate: int | None = None, field: str = "audio"
) -> np.ndarray:
    """A request's audio -> mono float32 at `sample_rate`: a wav file path, base64 wav (or data: URL),
    raw wav bytes, or a list of samples (then `sample_rate` of the request says their rate)."""
    if isinstance(value, bytes | bytearray):
        x, sr = decode_wav(bytes(value), field)
        return resample(x, sr, sample_rate)
    if isinstance(value, str):
        s = value.strip()
        if s.startswith("data:"):
            s = s.split(",", 1)[-1]
        if len(s) < 4096 and s.lower().endswith(".wav"):
            p = Path(s).expanduser()
            if not p.exists():
                raise BadRequest(f"'{field}': audio file '{s}' not found", param=field)
            x, sr = decode_wav(p.read_bytes(), field, name=p.name)
            return resample(x, sr, sample_rate)
        try:
            data = base64.b64decode(s, validate=True)
        except ValueError as e:
            raise BadRequest(
                f"'{field}' must be a wav file path, base64-encoded wav, or a list of samples", param=field
            ) from e
        x, sr = decode_wav(data, field)
        return resample(x, sr, sample_rate)
    try:
        x = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise BadRequest(f"'{field}': samples must be a flat list of numbers ({e})", param=field) from e
    if x.ndim != 1 or x.size < 16 or not np.isfinite(x).all():
        raise BadRequest(
            f"'{field}': expected a flat list of at least 16 finite samples (got shape {x.shape})",
            param=field,
        )
    if np.abs(x).max() > 1.0:
        x = x / 32768.0
    return resample(x, int(given_rate or sample_rate), sample_rate)


@lru_cache(maxsize=8)
def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float = 20.0, fmax: float | None = None
) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters equally spaced on the HTK mel scale."""
    fmax = fmax or sample_rate / 2

    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(np.array(fmin)), hz_to_mel(np.array(fmax)), n_mels + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    fb = np.maximum(0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))
    return torch.tensor(fb, dtype=torch.float32)


def log_mel(
    x: np.ndarray, sample_rate: int, n_mels: int = 40, win_ms: float = 32.0, hop_ms: float = 10.0
) -> np.ndarray:
    """Log-mel spectrogram (n_mels, frames) of a mono waveform."""
    win = int(round(sample_rate * win_ms / 1000))
    n_fft = 1 << (win - 1).bit_length()
    hop = max(1, int(round(sample_rate * hop_ms / 1000)))
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if t.numel() < win:
        t = torch.nn.functional.pad(t, (0, win - t.numel()))
    spec = (
        torch.stft(
            t,
            n_fft,
            hop_length=hop,
            win_length=win,
            window=torch.hann_window(win),
            center=True,
            return_complex=True,
        ).abs()
        ** 2
    )
    mel = mel_filterbank(sample_rate, n_fft, n_mels) @ spec
    return torch.log(mel + 1e-6).numpy()


def trim_silence(m: np.ndarray, top_db: float) -> np.ndarray:
    """Drop leading/trailing frames of a log-mel (n_mels, frames) whose energy is `top_db` dB below the
    loudest frame (at least 3 frames are kept)."""
    if top_db <= 0 or m.shape[1] <= 3:
        return m
    energy = np.log(np.exp(m).sum(axis=0) + 1e-10) * (10 / np.log(10))  # dB per frame
    loud = np.flatnonzero(energy >= energy.max() - top_db)
    lo, hi = int(loud[0]), int(loud[-1]) + 1
    if hi - lo < 3:
        mid = (lo + hi) // 2
        lo, hi = max(0, mid - 1), min(m.shape[1], mid + 2)
    return m[:, lo:hi]


def fit_frames(m: np.ndarray, frames: int, mode: str = "pad") -> np.ndarray:
    """(n_mels, t) -> (n_mels, frames): `resize` stretches time linearly (speaking-rate invariant), `pad`
    centres and zero-pads (or centre-crops)."""
    t = m.shape[1]
    if mode == "resize":
        if t == frames:
            return m
        x = torch.from_numpy(np.ascontiguousarray(m, dtype=np.float32))[None]
        return torch.nn.functional.interpolate(x, size=frames, mode="linear", align_corners=True)[0].numpy()
    if t >= frames:
        start = (t - frames) // 2
        return m[:, start : start + frames]
    left = (frames - t) // 2
    return np.pad(m, ((0, 0), (left, frames - t - left)))


def speed_perturb(x: np.ndarray, factor: float) -> np.ndarray:
    """Play a waveform `factor` times faster (tempo and pitch together, as in Kaldi speed perturbation)."""
    from scipy.signal import resample

    n = max(16, int(round(len(x) / factor)))
    return resample(x, n).astype(np.float32)


def utterance_features(
    x: np.ndarray,
    sample_rate: int,
    n_mels: int,
    frames: int,
    hop_ms: float = 10.0,
    trim_db: float = 0.0,
    norm: str = "mean",
    fit: str = "pad",
    cepstra: int = 0,
    lifter: int = 0,
    floor_db: float = 0.0,
) -> np.ndarray:
    """Log-mel (1, n_mels, frames): silence trimmed (`trim_db` > 0), normalized per utterance
    (`mean`: per-band mean removed, one global scale; `cmvn`: per-band mean and variance), brought to a fixed
    number of frames (`fit`: `pad` or `resize`). `cepstra` > 0 gives that many MFCCs instead of log-mels;
    `lifter` > 0 keeps the log-mel bands but smooths them to the first `lifter` cepstral coefficients;
    `floor_db` > 0 clips log-mel values more than that many dB below the utterance's maximum."""
    m = log_mel(x, sample_rate, n_mels, hop_ms=hop_ms)
    m = trim_silence(m, trim_db)
    if floor_db > 0:  # quiet time-frequency cells are noise: clip them at `floor_db` below the loudest
        m = np.maximum(m, m.max() - floor_db * np.log(10) / 10)
    if cepstra or lifter:
        from scipy.fft import dct, idct

        c = dct(m, type=2, axis=0, norm="ortho")
        if cepstra:  # MFCCs 1..cepstra (c0, the loudness, dropped)
            m = c[1 : cepstra + 1]
        else:  # smoothed log-mel: the spectral envelope without pitch harmonics
            c[lifter:] = 0
            m = idct(c, type=2, axis=0, norm="ortho")
    m = m - m.mean(axis=1, keepdims=True)
    if norm == "cmvn":
        m = m / (m.std(axis=1, keepdims=True) + 0.1)
    else:
        m = m / (m.std() + 1e-5)
    return fit_frames(m, frames, fit)[None].astype(np.float32)
