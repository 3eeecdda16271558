"""speech-recognition (spoken command / digit recognition): log-mel features and a CNN over them.

A recording is turned into a normalized log-mel spectrogram (luodi.data.audio) and classified by the same
CNN as images (luodi.tasks.image.GridClassifier), with spectrogram augmentation: time stretch (scale_x),
frequency warp (scale_y), shifts, noise and SpecAugment masks (time_mask, freq_mask).

App keys used: data.format wav-dir, data.options {pattern: regex with named groups label/speaker},
data.split {speaker: NAME or [NAMES] (leave those speakers out for validation) | valid: fraction, seed},
model.options {sample_rate (8000), n_mels (40), hop_ms (10), max_seconds (1.0), width, dropout}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, Field

from luodi.config import AppConfig
from luodi.data.audio import (
    AudioSet,
    audio_from_value,
    read_wav_dir,
    speed_perturb,
    utterance_features,
)
from luodi.errors import BadRequest, ConfigError, NotFound
from luodi.tasks.base import TaskBase
from luodi.tasks.image import GridClassifier, classification_evaluation, classification_result, split_indices


class SpeechInput(BaseModel):
    audio: str | list[float] | None = Field(
        None, description="wav as base64 (or a data: URL), a server-side .wav path, or a list of samples"
    )
    path: str | None = Field(None, description="wav file path (alternative to `audio`)")
    sample_rate: int | None = Field(None, description="rate of `audio` when it is a list of samples")


class SpeechOutput(BaseModel):
    text: str
    label: int | str
    score: float
    probabilities: dict[str, float]


class SpeechRecognitionTask(TaskBase):
    name = "speech-recognition"
    META = "speech_classifier.json"

    def __init__(self, config: AppConfig):
        super().__init__(config)
        self.clf: GridClassifier | None = None
        o = dict(config.model.options)
        self.sample_rate = int(o.get("sample_rate", 8000))
        self.n_mels = int(o.get("n_mels", 40))
        self.hop_ms = float(o.get("hop_ms", 10.0))
        self.frames = int(o.get("frames") or round(float(o.get("max_seconds", 1.0)) * 1000 / self.hop_ms))
        self.trim_db = float(o.get("trim_db", 0.0))
        self.norm = str(o.get("normalize", "mean"))
        self.fit_mode = str(o.get("fit", "pad"))
        self.cepstra, self.lifter = int(o.get("cepstra", 0)), int(o.get("lifter", 0))
        self.floor_db = float(o.get("floor_db", 0.0))
        if self.norm not in ("mean", "cmvn"):
            raise ConfigError(f"'model.options.normalize' = '{self.norm}'; expected 'mean' or 'cmvn'")
        if self.fit_mode not in ("pad", "resize"):
            raise ConfigError(f"'model.options.fit' = '{self.fit_mode}'; expected 'pad' or 'resize'")

    # data
    def read(self, path: str | None) -> AudioSet:
        from luodi.data.readers import expand_path

        d = self.config.data
        src = path if path is not None else d.path
        if src is None:
            raise ConfigError(
                "'data.path' is missing: give a folder of .wav files (labels in the file names)"
            )
        if d.format not in (None, "wav-dir", "wav"):
            raise ConfigError(f"'data.format' = '{d.format}' is not an audio format; use wav-dir")
        p = expand_path(src)
        if not p.exists():
            raise ConfigError(
                f"'data.path': '{p}' not found (from '{src}'); set LUODI_DATASETS or fix the path"
            )
        return read_wav_dir(p, self.sample_rate, d.options.get("pattern"))

    def split(self, data: AudioSet) -> tuple[AudioSet, AudioSet]:
        spec = dict(self.config.data.split)
        held = spec.pop("speaker", None) or spec.pop("speakers", None)
        if held is None:
            tr, va = split_indices(len(data), spec, data.labels)
            return data.subset(tr), data.subset(va)
        held = {held} if isinstance(held, str) else set(map(str, held))
        known = {s for s in data.speakers if s}
        missing = held - known
        if missing:
            raise ConfigError(
                f"'data.split.speaker': {sorted(missing)} not among the speakers {sorted(known)} "
                "(speakers come from the `speaker` group of data.options.pattern)"
            )
        va = [i for i, s in enumerate(data.speakers) if s in held]
        tr = [i for i, s in enumerate(data.speakers) if s not in held]
        return data.subset(tr), data.subset(va)

    def labels(self, data: AudioSet) -> list[Any]:
        return [str(v) for v in data.labels]

    def folds(self, data: AudioSet, k: int, seed: int = 0) -> list[tuple[AudioSet, AudioSet]]:
        from luodi.data.split import kfold_indices

        return [
            (data.subset(tr), data.subset(va))
            for tr, va in kfold_indices(len(data), k, seed, self.labels(data))
        ]

    def features(self, waves: list[np.ndarray]) -> np.ndarray:
        if not waves:
            return np.zeros((0, 1, self.cepstra or self.n_mels, self.frames), np.float32)
        return np.stack(
            [
                utterance_features(
                    w,
                    self.sample_rate,
                    self.n_mels,
                    self.frames,
                    self.hop_ms,
                    self.trim_db,
                    self.norm,
                    self.fit_mode,
                    self.cepstra,
                    self.lifter,
                    self.floor_db,
                )
                for w in waves
            ]
        )

    # training
    def fit(
        self, train: AudioSet, valid: AudioSet | None, run_dir: Path, progress: bool = True
    ) -> dict[str, float]:
        if len(train) == 0:
            raise ConfigError("no training recordings: check data.path and data.split")
        if any(v is None for v in train.labels):
            raise ConfigError(
                "some recordings have no label: name files like 7_jackson_32.wav, put them in class "
                "folders, or set data.options.pattern"
            )
        aug = dict(self.config.train.augment)
        speeds = aug.pop("speed", None) or []
        speeds = [speeds] if isinstance(speeds, int | float) else list(speeds)
        if not all(isinstance(v, int | float) and 0.5 <= v <= 2 for v in speeds):
            raise ConfigError(
                f"'train.augment.speed' = {speeds}; expected a list of speed factors such as [0.9, 1.1]"
            )
        waves, labels = list(train.waves), list(train.labels)
        for f in speeds:  # extra copies played faster/slower (tempo and pitch), fixed once before training
            waves += [speed_perturb(w, float(f)) for w in train.waves]
            labels += list(train.labels)
        x = self.features(waves)
        config = self.config.model_copy(
            update={"train": self.config.train.model_copy(update={"augment": aug})}
        )
        o = dict(self.config.model.options)
        meta = {
            "classes": sorted(set(train.labels), key=str),
            "channels": 1,
            "size": [self.cepstra or self.n_mels, self.frames],
            "width": int(o.get("width", 32)),
            "dropout": float(o.get("dropout", 0.3)),
            "mean": 0.0,
            "std": 1.0,
            "sample_rate": self.sample_rate,
            "n_mels": self.n_mels,
            "hop_ms": self.hop_ms,
            "trim_db": self.trim_db,
            "normalize": self.norm,
            "fit": self.fit_mode,
            "cepstra": self.cepstra,
            "lifter": self.lifter,
            "floor_db": self.floor_db,
        }
        torch.manual_seed(self.config.train.seed)  # reproducible initial weights
        self.clf = GridClassifier(meta)
        va = (self.features(valid.waves), valid.labels) if valid is not None and len(valid) else None
        return self.clf.fit(config, x, labels, va, Path(run_dir), progress, self.on_epoch_end)

    # inference
    def _need(self) -> GridClassifier:
        if self.clf is None:
            raise NotFound("the model is not trained or loaded yet: call fit() or load(run_dir) first")
        return self.clf

    def predict(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        clf = self._need()
        waves = []
        for i, r in enumerate(records):
            if not isinstance(r, dict):
                raise BadRequest(f"input {i} must be an object with 'audio' or 'path'", param="audio")
            value = r.get("audio", r.get("path"))
            if value is None:
                raise BadRequest(
                    f"input {i}: 'audio' is missing (wav file path, base64 wav or samples)", param="audio"
                )
            field = f"audio[{i}]" if len(records) > 1 else "audio"
            waves.append(audio_from_value(value, self.sample_rate, r.get("sample_rate"), field))
        out = classification_result(clf, clf.proba(self.features(waves)))
        return [{"text": str(o["label"]), **o} for o in out]

    def evaluate(self, data: AudioSet) -> dict[str, Any]:
        clf = self._need()
        if any(v is None for v in data.labels):
            raise BadRequest("evaluation recordings have no labels (file names like 7_jackson_32.wav needed)")
        return classification_evaluation(clf, clf.proba(self.features(data.waves)), data.labels)

    def save(self, run_dir: Path) -> None:
        self._need().save(Path(run_dir), self.META)

    def load(self, run_dir: Path) -> None:
        self.clf = GridClassifier.load(Path(run_dir), self.META)
        m = self.clf.meta
        self.sample_rate, self.n_mels, self.hop_ms = m["sample_rate"], m["n_mels"], m["hop_ms"]
        self.frames = m["size"][1]
        # models saved before these options existed used the old fixed behaviour
        self.trim_db, self.norm = m.get("trim_db", 0.0), m.get("normalize", "mean")
        self.fit_mode = m.get("fit", "pad")
        self.cepstra, self.lifter = m.get("cepstra", 0), m.get("lifter", 0)
        self.floor_db = m.get("floor_db", 0.0)

    def input_model(self) -> type[BaseModel]:
        return SpeechInput

    def output_model(self) -> type[BaseModel]:
        return SpeechOutput
