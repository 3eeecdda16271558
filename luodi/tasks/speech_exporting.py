"""`luodi export` for speech-recognition (a mixin of SpeechRecognitionTask). model.type cnn: the CNN ensemble as one
ONNX graph and the feature steps as data, so the bundle's predict.py computes luodi's log-mel / cepstral features
with numpy alone. model.type speech-embedding: the pretrained network's two ONNX graphs and the regression head as
data (bundles/speech_embedding_predict.py).

What is data in the cnn bundle's preprocess.json: the labels, the STFT's window (torch's periodic Hann, zero-padded
to the FFT size), the mel filterbank, the cepstral matrix (the DCT rows of `cepstra`, or the liftering projection of
`lifter`, as one linear map over the bands) and the scalar options (rate, hop, trimming, floor, normalization, frame
fitting, test-time speeds). What stays code in predict.py: reading PCM wav with the standard library's `wave`, the
polyphase resampling (scipy's resample_poly with its Kaiser-windowed filter, in numpy), the STFT and the
per-utterance steps.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from luodi import crypto
from luodi.atomic import write_json
from luodi.data.audio import mel_filterbank
from luodi.errors import ConfigError
from luodi.tasks.onnx_image import GRAPH, OnnxGrid
from luodi.tasks.onnx_speech import export_ensemble

WIN_MS = 32.0  # luodi.data.audio.log_mel's window


def cepstral_matrix(n_mels: int, cepstra: int, lifter: int) -> np.ndarray | None:
    """The linear map over log-mel bands that `utterance_features` applies with scipy's DCT: MFCCs 1..cepstra,
    or the log-mels smoothed to their first `lifter` coefficients; None when neither is set."""
    from scipy.fft import dct

    if not (cepstra or lifter):
        return None
    d = dct(np.eye(n_mels), type=2, axis=0, norm="ortho")  # d @ m == dct(m, axis=0)
    if cepstra:
        return d[1 : cepstra + 1]
    keep = (np.arange(n_mels) < lifter).astype(float)
    return d.T @ (keep[:, None] * d)


def feature_spec(meta: dict[str, Any], feature_options: dict[str, Any], tta_speeds: list[float]) -> dict[str, Any]:
    """Everything the bundle's numpy features read (see the module docstring)."""
    sr, n_mels = int(meta["sample_rate"]), int(meta["n_mels"])
    win = int(round(sr * WIN_MS / 1000))
    n_fft = 1 << (win - 1).bit_length()
    left = (n_fft - win) // 2
    window = np.pad(torch.hann_window(win).numpy(), (left, n_fft - win - left))
    cep = cepstral_matrix(n_mels, int(feature_options["cepstra"]), int(feature_options["lifter"]))
    return {
        "labels": meta["classes"],
        "sample_rate": sr,
        "win": win,
        "hop": max(1, int(round(sr * float(meta["hop_ms"]) / 1000))),
        "frames": int(meta["size"][1]),
        "window": window.tolist(),
        "mel": mel_filterbank(sr, n_fft, n_mels).numpy().tolist(),
        "cepstral": None if cep is None else cep.tolist(),
        **{k: feature_options[k] for k in ("trim_db", "floor_db", "normalize", "fit")},
        "tta_speeds": [float(s) for s in tta_speeds] or [1.0],
    }


class SpeechExporting:
    """export_bundle of SpeechRecognitionTask (its state is declared there)."""

    clf: Any
    kind: str
    feature_options: dict[str, Any]
    tta_speeds: list[float]
    need: Callable[[], Any]

    def export_bundle(self, out: Path) -> dict[str, Any]:
        """Write a standalone bundle into `out`. model.type cnn: model.onnx (the CNN ensemble, mean of the members'
        softmax), preprocess.json (labels and the feature steps as data) and predict.py; speech-embedding: the two
        ONNX graphs of the pretrained embedding, head.json (the regression head, standardization, temperature,
        windowing) and predict.py. Both need only onnxruntime and numpy."""
        from luodi.tasks import bundles

        clf, out = self.need(), Path(out)
        if self.kind == "speech-embedding":
            spec = self._embedding_bundle(clf, out)
            shutil.copy2(Path(bundles.__file__).parent / "speech_embedding_predict.py", out / "predict.py")
            return spec
        if isinstance(clf, OnnxGrid):
            (out / GRAPH).write_bytes(crypto.read_bytes(clf.path))  # (plaintext: a bundle runs without luodi)
        else:
            export_ensemble(clf, out / GRAPH)
        m = clf.meta
        if float(m.get("mean", 0.0)) != 0.0 or float(m.get("std", 1.0)) != 1.0:
            raise ConfigError("this speech model normalizes its input outside the graph, which bundles do not "
                              "reproduce; retrain the app", param="model")
        write_json(out / "preprocess.json", feature_spec(m, self.feature_options, self.tta_speeds))
        shutil.copy2(Path(bundles.__file__).parent / "speech_predict.py", out / "predict.py")
        return {
            "inputs": f"PCM .wav files (any rate and channels: mixed to mono and resampled to {m['sample_rate']} Hz)",
            "outputs": "{label, score}: the recognised label and its probability",
            "example": "python predict.py recording.wav ...   (or one wav path per line on stdin)",
            "requires": "onnxruntime numpy",
            "contents": "model.onnx (the CNN ensemble), preprocess.json (labels, STFT window, mel filterbank, "
            "cepstral matrix, trimming / normalization / frame options), predict.py",
            "labels": len(m["classes"]),
        }

    def _embedding_bundle(self, clf: Any, out: Path) -> dict[str, Any]:
        """The speech-embedding bundle's graphs and head.json (a binary head's one row becomes two, as
        LinearHead.log_proba reads it)."""
        from luodi.data import speech_embedding as se

        m = clf.meta
        for name in se.FILES:
            shutil.copyfile(se.model_dir(m.get("source")) / name, out / name)
        coef, intercept = clf.head.coef, clf.head.intercept
        if len(coef) == 1:
            coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
        write_json(out / "head.json", {
            "labels": m["classes"], "sample_rate": int(m["sample_rate"]),
            "min_samples": int(round(float(m["window_seconds"]) * se.RATE)), "window": se.WINDOW_FRAMES,
            "stride": se.STRIDE_FRAMES, "mean": clf.mean.tolist(), "std": clf.std.tolist(), "coef": coef.tolist(),
            "intercept": np.asarray(intercept).tolist(), "temperature": float(m.get("temperature", 1.0)),
            "tta_speeds": [float(s) for s in m.get("tta_speeds", [])] or [1.0],
        })
        return {
            "inputs": f"PCM .wav files (any rate and channels: mixed to mono and resampled to {m['sample_rate']} Hz)",
            "outputs": "{label, score}: the recognised label and its probability",
            "example": "python predict.py recording.wav ...   (or one wav path per line on stdin)",
            "requires": "onnxruntime numpy",
            "contents": f"{' and '.join(se.FILES)} (Google's speech_embedding network, Apache-2.0, as openwakeword "
            "ships it), head.json (the regression head, standardization, temperature, windowing), predict.py",
            "labels": len(m["classes"]),
        }
