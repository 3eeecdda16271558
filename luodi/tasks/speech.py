"""speech-recognition (spoken command / digit recognition).

`model.type: speech-embedding`: a pretrained speech network (Google's speech_embedding,
luodi.data.speech_embedding) turns a recording into 96 numbers, and a logistic regression over the
standardized numbers learns the classes; it needs no epochs and generalizes to new voices far better than
a CNN trained from scratch on a few speakers. Its probabilities are divided by a temperature fitted on
leave-one-speaker-out predictions over the training speakers. model.source: a folder with the two ONNX files
(default: the installed openwakeword package's); train.augment.speed.

`model.type: cnn` (the default): a recording is turned into a normalized log-mel spectrogram
(luodi.data.audio) and classified by the same CNN as images (luodi.tasks.grid_cnn), with spectrogram
augmentation: time stretch (scale_x), frequency warp (scale_y), shifts, noise and SpecAugment masks
(time_mask, freq_mask), plus speed-perturbed copies (speed) and mixup. `ensemble: N` trains N CNNs with
consecutive seeds and averages their probabilities. Every CNN keeps its LAST epoch: the validation data (a
held-out speaker) is only reported, so train.early_stopping has no effect here.

App keys used: data.format wav-dir, data.options {pattern: regex with named groups label/speaker},
data.split {speaker: NAME or [NAMES] (leave those speakers out for validation) | valid: fraction, seed},
model.options (luodi.options.speech.SpeechRecognitionOptions), train.augment {the grid augmentations,
speed: [factors], mixup: Beta parameter}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, Field

from luodi import crypto
from luodi.config import AppConfig, model_options
from luodi.data.audio import AudioSet, audio_from_value, read_wav_dir, speed_perturb, utterance_features
from luodi.data.speech_embedding import get_embedder
from luodi.errors import BadRequest, ConfigError
from luodi.options.speech import SpeechRecognitionOptions
from luodi.tasks.file_classifier import (
    FileClassifierTask,
    label_targets,
    loss_and_accuracy,
)
from luodi.tasks.grid_cnn import GridClassifier, check_augment
from luodi.tasks.onnx_image import OnnxGrid, load_grid
from luodi.tasks.onnx_speech import SpeechOptimizing
from luodi.tasks.speech_exporting import SpeechExporting
from luodi.tasks.speech_models import EmbeddingClassifier, Ensemble

MODEL_TYPES = ("cnn", "speech-embedding")
# what a stored CNN's meta holds of the feature options (models saved before an option existed used these)
FEATURE_DEFAULTS = {"trim_db": 0.0, "normalize": "mean", "fit": "pad", "cepstra": 0, "lifter": 0, "floor_db": 0.0}


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


def speed_factors(value: Any, key: str) -> list[float]:
    """A speed factor or a list of them, each in [0.5, 2]; errors name `key`."""
    speeds = [value] if isinstance(value, int | float) else value
    if not isinstance(speeds, list) or not all(isinstance(v, int | float) and 0.5 <= v <= 2 for v in speeds):
        raise ConfigError(f"'{key}' = {value!r}; expected a list of speed factors such as [0.9, 1.1]", param=key)
    return [float(v) for v in speeds]


class SpeechRecognitionTask(SpeechOptimizing, SpeechExporting, FileClassifierTask):
    name = "speech-recognition"
    META = "speech_classifier.json"
    FIELD = "audio"
    WHAT = "wav file path, base64 wav or samples"
    NO_LABELS = "evaluation recordings have no labels (file names like 7_jackson_32.wav needed)"
    SPLIT_KEYS = ("valid", "seed", "shuffle", "stratify", "speaker", "speakers")

    def __init__(self, config: AppConfig):
        super().__init__(config)
        self.clf: Ensemble | EmbeddingClassifier | OnnxGrid | None = None  # OnnxGrid: an optimized run
        self.opts: SpeechRecognitionOptions = model_options(config)
        self.kind = config.model.type or "cnn"
        if self.kind not in MODEL_TYPES:
            raise ConfigError(
                f"'model.type' for speech-recognition must be one of {', '.join(MODEL_TYPES)} (got {self.kind!r})",
                param="model.type",
            )
        o = self.opts
        self.source = config.model.source
        self.window_seconds = o.window_seconds
        self.sample_rate = o.sample_rate or (16000 if self.kind == "speech-embedding" else 8000)
        self.n_mels, self.hop_ms = o.n_mels, o.hop_ms
        self.frames = o.frames or round(o.max_seconds * 1000 / o.hop_ms)
        self.feature_options = {k: getattr(o, k) for k in FEATURE_DEFAULTS}
        self.tta_speeds = [float(v) for v in o.tta_speeds]

    def refit_blocker(self) -> str | None:
        return None  # validation rows are only reported: every CNN keeps its last epoch, the regression has none

    # data
    def read(self, path: str | None) -> AudioSet:
        d = self.config.data
        if d.format not in (None, "wav-dir", "wav"):
            raise ConfigError(f"'data.format' = '{d.format}' is not an audio format; use wav-dir", param="data.format")
        p = self.data_path(path, "give a folder of .wav files (labels in the file names)")
        return read_wav_dir(p, self.sample_rate, d.options.get("pattern"))

    def data_labels(self, data: AudioSet) -> list[Any]:
        return data.labels

    def held_rows(self, data: AudioSet) -> np.ndarray | None:
        """data.split.speaker(s): those speakers' recordings are the validation set."""
        split = self.config.data.split
        held = split.speaker if split.speaker is not None else split.speakers
        if held is None:
            return None
        held = {str(s) for s in (held if isinstance(held, list) else [held])}
        known = {s for s in data.speakers if s}
        missing = held - known
        if missing:
            raise ConfigError(
                f"'data.split.speaker': {sorted(missing)} not among the speakers {sorted(known)} "
                "(speakers come from the `speaker` group of data.options.pattern)",
                param="data.split.speaker",
            )
        return np.array([s in held for s in data.speakers], dtype=bool)

    def features(self, waves: list[np.ndarray], progress: bool = False) -> np.ndarray:
        """CNN: log-mel grids (n, 1, bands, frames); speech-embedding: pretrained embeddings (n, 96)."""
        if self.kind == "speech-embedding":
            return get_embedder(self.source, self.window_seconds).embed(waves, self.sample_rate, progress=progress)
        f = self.feature_options
        if not waves:
            return np.zeros((0, 1, f["cepstra"] or self.n_mels, self.frames), np.float32)
        return np.stack(
            [
                utterance_features(
                    w,
                    self.sample_rate,
                    self.n_mels,
                    self.frames,
                    self.hop_ms,
                    f["trim_db"],
                    f["normalize"],
                    f["fit"],
                    f["cepstra"],
                    f["lifter"],
                    f["floor_db"],
                )
                for w in waves
            ]
        )

    # training
    def augment_options(self) -> tuple[list[float], float, dict[str, Any]]:
        """train.augment -> (speed copies, mixup alpha, grid augmentations)."""
        aug = dict(self.config.train.augment)
        check_augment(aug, {"speed", "mixup"})
        speeds = speed_factors(aug.pop("speed", None) or [], "train.augment.speed")
        mixup = aug.pop("mixup", 0.0)
        if not isinstance(mixup, int | float) or mixup < 0:
            raise ConfigError(
                f"'train.augment.mixup' = {mixup!r}; expected a Beta parameter >= 0 such as 0.4",
                param="train.augment.mixup",
            )
        return speeds, float(mixup), aug

    def fit(self, train: AudioSet, valid: AudioSet | None, run_dir: Path, progress: bool = True) -> None:
        """Train `model.options.ensemble` CNNs (seeds train.seed, +1, ...) on log-mels of the training
        recordings. Each keeps its last epoch (the cosine schedule has converged there): `valid` is only
        reported per epoch, never used to pick weights, so its final score is an honest held-out one."""
        self.check_labelled(
            train,
            "recordings",
            "name files like 7_jackson_32.wav, put them in class folders, or set data.options.pattern",
        )
        speeds, mixup, aug = self.augment_options()
        if self.kind == "speech-embedding":
            return self._fit_embedding(train, valid, speeds, mixup, aug, progress)
        n_models, t, o = self.opts.ensemble, self.config.train, self.opts
        waves, labels = list(train.waves), list(train.labels)
        for f in speeds:  # extra copies played faster/slower (tempo and pitch), fixed once before training
            waves += [speed_perturb(w, float(f)) for w in train.waves]
            labels += list(train.labels)
        x = self.features(waves)
        meta = {
            "classes": sorted(set(train.labels), key=str),
            "channels": 1,
            "size": [self.feature_options["cepstra"] or self.n_mels, self.frames],
            "width": o.width,
            "dropout": o.dropout,
            "mean": 0.0,
            "std": 1.0,
            "sample_rate": self.sample_rate,
            "n_mels": self.n_mels,
            "hop_ms": self.hop_ms,
            **self.feature_options,
            "tta_speeds": self.tta_speeds,
        }
        va = (self.features(valid.waves), valid.labels) if valid is not None and len(valid) else None
        members = []
        for k in range(n_models):
            seed = t.seed + k
            torch.manual_seed(seed)  # reproducible initial weights
            clf = GridClassifier(meta)
            member_dir = Path(run_dir) if n_models == 1 else Path(run_dir) / "checkpoint" / f"member-{k}"

            def on_epoch(epoch: int, logs: dict[str, float], offset: int = k * t.epochs) -> None:
                self.on_epoch_end(offset + epoch, logs)  # members' epochs numbered one after another

            clf.fit(
                t,
                x,
                labels,
                va,
                member_dir,
                aug=aug,
                label_smoothing=o.label_smoothing,
                weight_decay=o.weight_decay,
                schedule=o.schedule,
                mixup=mixup,
                keep_last=True,
                seed=seed,
                progress=progress,
                on_epoch=on_epoch,
            )
            members.append(clf)
        self.clf = Ensemble(members)

    def _fit_embedding(
        self,
        train: AudioSet,
        valid: AudioSet | None,
        speeds: list[float],
        mixup: float,
        aug: dict[str, Any],
        progress: bool,
    ) -> None:
        """Embed every recording once (and its speed copies) and fit the logistic regression."""
        if mixup or aug:
            raise ConfigError(
                f"'train.augment.{'mixup' if mixup else sorted(aug)[0]}' applies to model.type cnn; "
                "speech-embedding takes only train.augment.speed"
            )
        waves = list(train.waves) + [speed_perturb(w, f) for f in speeds for w in train.waves]
        labels = list(train.labels) * (1 + len(speeds))
        meta = {
            "model_type": self.kind,
            "classes": sorted(set(train.labels), key=str),
            "sample_rate": self.sample_rate,
            "window_seconds": self.window_seconds,
            "source": self.source,
            "c": self.opts.c,
            "tta_speeds": self.tta_speeds,
        }
        x = self.features(waves, progress)
        y = label_targets(meta["classes"], labels).numpy()
        speakers = list(train.speakers) * (1 + len(speeds))
        self.clf = EmbeddingClassifier.fit(meta, x, y, self.opts.c, self.config.train.seed, groups=speakers)
        # one "epoch" for the history: the fitted rows' scores (no TTA) and, when given, validation's
        logs = loss_and_accuracy(self.clf.proba(x[: len(train)]), y[: len(train)], "train")
        if valid is not None and len(valid):
            vy = self.clf.targets(valid.labels, "valid label").numpy()
            logs.update(loss_and_accuracy(self.proba(valid.waves), vy, "valid"))
        self.on_epoch_end(1, logs)

    # inference
    def proba(self, waves: list[np.ndarray]) -> np.ndarray:
        """Class probabilities; with tta_speeds, averaged over the recording played at each speed."""
        clf = self.need()
        speeds = self.tta_speeds or [1.0]
        return np.mean(
            [clf.proba(self.features([w if f == 1 else speed_perturb(w, f) for w in waves])) for f in speeds], axis=0
        )

    def decode(self, values: list[Any], records: list[dict[str, Any]]) -> list[np.ndarray]:
        """Request values -> mono waveforms at the model's rate (errors name the record's field)."""
        return [
            audio_from_value(v, self.sample_rate, r.get("sample_rate"), self.field_name(i, len(values)))
            for i, (v, r) in enumerate(zip(values, records, strict=True))
        ]

    def values_proba(self, values: list[Any], records: list[dict[str, Any]]) -> np.ndarray:
        return self.proba(self.decode(values, records))

    def data_proba(self, data: AudioSet) -> np.ndarray:
        return self.proba(data.waves)

    def explain(self, records: list[dict[str, Any]], top: int | None = None) -> list[dict[str, Any]]:
        """Predictions with an `explanation` each: integrated gradients (Captum) of the predicted class's
        logit (the CNNs' mean logit) over the normalized log-mel frames the CNN reads, from silence (the
        all-zero spectrogram, also what padding holds), summed over the mel bands into one effect per frame
        (times in seconds of the request's audio) with the `top` segments (default 3) and the completeness
        error. speech-embedding apps run an ONNX network, which has no gradients: 400."""
        from luodi.tasks.speech_explain import explain_waves

        if isinstance(self.clf, OnnxGrid):
            raise BadRequest(
                "this run is an ONNX model, which gives no gradients for explanations; use the torch run it was "
                "optimized from (--version)", param="version",
            )
        if self.kind != "cnn":
            raise BadRequest(
                "explanations of speech apps need model.type cnn: the speech-embedding network is ONNX, which "
                "gives no gradients for integrated gradients",
                param="explain",
            )
        values = self.request_values(records)
        return explain_waves(self, self.decode(values, records), 3 if top is None else top)

    def predict(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"text": str(o["label"]), **o} for o in super().predict(records)]

    def load(self, run_dir: Path) -> None:
        path = Path(run_dir) / self.META
        m = crypto.read_json(path) if path.exists() else {}
        if m.get("model_type") == "speech-embedding":
            self.clf = EmbeddingClassifier.load(Path(run_dir), m)
            self.kind, self.sample_rate, self.source = m["model_type"], m["sample_rate"], m.get("source")
            self.window_seconds, self.tta_speeds = m["window_seconds"], m.get("tta_speeds", [])
            return
        # an optimized run (luodi optimize --method onnx) names its graph in the JSON: the ensemble as ONNX
        self.clf = load_grid(Path(run_dir), self.META) if "runtime" in m else Ensemble.load(Path(run_dir), self.META)
        self.kind = "cnn"
        m = self.clf.meta
        self.sample_rate, self.n_mels, self.hop_ms = m["sample_rate"], m["n_mels"], m["hop_ms"]
        self.frames = m["size"][1]
        self.feature_options = {k: m.get(k, default) for k, default in FEATURE_DEFAULTS.items()}
        self.tta_speeds = m.get("tta_speeds", [])

    def input_model(self) -> type[BaseModel]:
        return SpeechInput

    def output_model(self) -> type[BaseModel]:
        return SpeechOutput
