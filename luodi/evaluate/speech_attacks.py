"""Input-space attacks on recordings: the log-mel feature path rebuilt in torch, so gradients reach the samples.

Why: a speech app's served features (luodi.data.audio.utterance_features) are computed with torch.stft and numpy
steps that cut the gradient. `WaveFeatures` is the same computation kept in torch (STFT power, mel filterbank,
log, silence trim, floor, cepstral liftering or MFCCs as a fixed DCT matrix, normalization, fit to the frame
count); the trim boundaries are found without gradient (a choice of frames), every value flows. A CNN behind it
(`WaveModel`) is attacked with ART like an image model.

Recordings differ in length while ART wants one input shape, so a batch is packed (`pack`): each row holds the
recording divided by its peak amplitude, zero-padded to the longest, then two slots, its length (as a share of the
row) and its peak. The ART `mask` lets only a recording's own samples move, so the slots and the padding are
never perturbed, and `clip_values` (-1, 1) keeps every attacked sample within the original recording's peak.
eps is therefore L-inf in units of each recording's peak amplitude: eps 0.01 lets every sample move by 1 % of
the loudest sample (-40 dB of the peak); `snr_db` says how loud the added noise is against the recording.
Everything here takes tensors, arrays and modules (no app, no task), so tests, the audit and the bench call it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SLOTS = 2  # length share and peak, after the samples


@dataclass
class FeatureOptions:
    """The options of utterance_features (see luodi.data.audio), as a speech app's CNN stores them."""

    sample_rate: int
    n_mels: int
    frames: int
    hop_ms: float = 10.0
    trim_db: float = 0.0
    normalize: str = "mean"
    fit: str = "pad"
    cepstra: int = 0
    lifter: int = 0
    floor_db: float = 0.0
    win_ms: float = 32.0


class WaveFeatures(nn.Module):
    """One recording (1-d tensor) -> its log-mel grid (1, bands, frames), differentiable in the samples."""

    def __init__(self, options: FeatureOptions, filterbank: torch.Tensor):
        super().__init__()
        o = self.o = options
        self.win = int(round(o.sample_rate * o.win_ms / 1000))
        self.n_fft = 1 << (self.win - 1).bit_length()
        self.hop = max(1, int(round(o.sample_rate * o.hop_ms / 1000)))
        self.register_buffer("fb", filterbank.float())
        self.register_buffer("window", torch.hann_window(self.win))
        from scipy.fft import dct

        d = torch.from_numpy(dct(np.eye(o.n_mels), type=2, axis=0, norm="ortho")).float()  # c = d @ m
        if o.cepstra:
            proj = d[1 : o.cepstra + 1]
        elif o.lifter:
            proj = d.T @ torch.diag((torch.arange(o.n_mels) < o.lifter).float()) @ d
        else:
            proj = None
        self.register_buffer("proj", proj if proj is not None else torch.zeros(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.o
        if x.numel() < self.win:
            x = F.pad(x, (0, self.win - x.numel()))
        spec = (
            torch.stft(x, self.n_fft, self.hop, self.win, window=self.window, center=True, return_complex=True).abs()
            ** 2
        )
        m = torch.log(self.fb @ spec + 1e-6)
        if o.trim_db > 0 and m.shape[1] > 3:
            with torch.no_grad():
                energy = torch.log(torch.exp(m).sum(0) + 1e-10) * (10 / np.log(10))
                loud = torch.nonzero(energy >= energy.max() - o.trim_db).flatten()
                lo, hi = int(loud[0]), int(loud[-1]) + 1
                if hi - lo < 3:
                    mid = (lo + hi) // 2
                    lo, hi = max(0, mid - 1), min(m.shape[1], mid + 2)
            m = m[:, lo:hi]
        if o.floor_db > 0:
            m = torch.maximum(m, m.max() - o.floor_db * np.log(10) / 10)
        if self.proj.numel():
            m = self.proj @ m
        m = m - m.mean(1, keepdim=True)
        # numpy's std is the population one (unbiased=False)
        if o.normalize == "cmvn":
            m = m / (m.std(1, keepdim=True, unbiased=False) + 0.1)
        else:
            m = m / (m.std(unbiased=False) + 1e-5)
        return _fit_frames(m, o.frames, o.fit)[None]


def _fit_frames(m: torch.Tensor, frames: int, mode: str) -> torch.Tensor:
    t = m.shape[1]
    if mode == "resize":
        return m if t == frames else F.interpolate(m[None], size=frames, mode="linear", align_corners=True)[0]
    if t >= frames:
        start = (t - frames) // 2
        return m[:, start : start + frames]
    left = (frames - t) // 2
    return F.pad(m, (left, frames - t - left))


def pack(waves: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Recordings -> (rows (n, longest + 2), mask of the samples that may move); see the module docstring."""
    longest = max(len(w) for w in waves)
    rows = np.zeros((len(waves), longest + SLOTS), np.float32)
    mask = np.zeros_like(rows)
    for i, w in enumerate(waves):
        peak = float(np.abs(w).max()) or 1.0
        rows[i, : len(w)] = np.asarray(w, np.float32) / peak
        rows[i, -2], rows[i, -1] = len(w) / longest, peak
        mask[i, : len(w)] = 1.0
    return rows, mask


def unpack(rows: np.ndarray) -> list[np.ndarray]:
    """Packed rows -> recordings at their own amplitude and length."""
    longest = rows.shape[1] - SLOTS
    return [r[: int(round(r[-2] * longest))] * r[-1] for r in np.asarray(rows, np.float32)]


class WaveModel(nn.Module):
    """Packed recordings -> log-probabilities: WaveFeatures per recording, then `classify` on the grids
    (grids (n, 1, bands, frames) -> log-probabilities)."""

    def __init__(self, features: WaveFeatures, classify: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.features, self.classify = features, classify

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        longest = rows.shape[1] - SLOTS
        meta = rows[:, -SLOTS:].detach()
        # unbind, not iteration: its backward stacks the rows' gradients once (indexing row by row would add a
        # full-batch zero gradient per row, quadratic in the batch)
        grids = [
            self.features(r[: int(round(float(share) * longest))] * peak)
            for r, (share, peak) in zip(rows.unbind(0), meta, strict=True)
        ]
        return self.classify(torch.stack(grids))


def ensemble_classifier(models: Sequence[nn.Module], mean: float = 0.0, std: float = 1.0) -> Callable:
    """Grids -> log of the members' mean probability (what the served ensemble answers)."""
    for m in models:
        m.eval()

    def classify(grids: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([F.softmax(m((grids - mean) / std), 1) for m in models]).mean(0)
        return torch.log(probs.clamp_min(1e-12))

    return classify


def snr_db(clean: Sequence[np.ndarray], attacked: Sequence[np.ndarray]) -> float:
    """Mean over recordings of 10 log10(signal power / added-noise power); inf when nothing moved."""
    vals = []
    for c, a in zip(clean, attacked, strict=True):
        noise = float(np.sum((np.asarray(a, np.float64) - c) ** 2))
        if noise > 0:
            vals.append(10 * np.log10(float(np.sum(np.asarray(c, np.float64) ** 2)) / noise))
    return float(np.mean(vals)) if vals else float("inf")


def fit_surrogate_cnn(
    grids: np.ndarray, y: np.ndarray, n_classes: int, *, epochs: int = 15, seed: int = 0, width: int = 16
) -> nn.Module:
    """A small CNN on log-mel grids that learns a model's answers `y`: the differentiable stand-in for a speech
    model without torch gradients (the pretrained ONNX speech embedding), to craft transfer attacks."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(2 * width, 4 * width, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * width, n_classes),
    )
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(grids.astype(np.float32)), torch.from_numpy(y.astype(np.int64))
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(xt)).split(64):
            loss = F.cross_entropy(net(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()
