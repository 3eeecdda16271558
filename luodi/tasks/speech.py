"""speech-recognition (spoken command / digit recognition).

`model.type: speech-embedding`: a pretrained speech network (Google's speech_embedding,
luodi.data.speech_embedding) turns a recording into 96 numbers, and a logistic regression over the
standardized numbers learns the classes; it needs no epochs and generalizes to new voices far better than
a CNN trained from scratch on a few speakers. Its probabilities are divided by a temperature fitted on
leave-one-speaker-out predictions over the training speakers. Options: `window_seconds` (1.6: silence the recording is
centred in), `c` (0.03: inverse L2 strength), `tta_speeds`, sample_rate (16000); train.augment.speed;
model.source: a folder with the two ONNX files (default: the installed openwakeword package's).

`model.type: cnn` (the default): log-mel features and a CNN (or several) over them. A recording is turned
into a normalized log-mel spectrogram (luodi.data.audio) and classified by the same CNN as images
(luodi.tasks.image.SmallCNN), with spectrogram augmentation: time stretch (scale_x), frequency warp
(scale_y), shifts, noise and SpecAugment masks (time_mask, freq_mask), plus speed-perturbed copies (speed)
and mixup. `ensemble: N` trains N CNNs with consecutive seeds and averages their probabilities. Every CNN
keeps its LAST epoch: the validation data (a held-out speaker) is only reported, so train.early_stopping
has no effect here.

App keys used: data.format wav-dir, data.options {pattern: regex with named groups label/speaker},
data.split {speaker: NAME or [NAMES] (leave those speakers out for validation) | valid: fraction, seed},
model.options {sample_rate (8000), n_mels (40), hop_ms (10), max_seconds (1.0) or frames, trim_db, floor_db,
normalize (mean | cmvn), fit (pad | resize), cepstra, lifter, width, dropout, label_smoothing, ensemble (1),
tta_speeds ([]: test-time augmentation, probabilities averaged over copies played at these speeds)},
train.augment {image augmentations above, speed: [factors], mixup: Beta parameter}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import nn

from luodi.atomic import atomic_path, write_json
from luodi.config import AppConfig
from luodi.data.audio import (
    AudioSet,
    audio_from_value,
    read_wav_dir,
    speed_perturb,
    utterance_features,
)
from luodi.data.speech_embedding import get_embedder
from luodi.errors import BadRequest, ConfigError, NotFound
from luodi.evaluate.calibration import apply_temperature, fit_temperature
from luodi.tasks.base import TaskBase
from luodi.tasks.image import (
    AUGMENT_KEYS,
    WEIGHTS,
    GridClassifier,
    augment_batch,
    classification_evaluation,
    classification_result,
    label_targets,
    split_indices,
    training_threads,
)
from luodi.tasks.text_classification import LinearHead, fit_logreg
from luodi.train.torch_loop import LoopConfig, load_weights, save_weights, train_loop

SPEECH_AUGMENT = {"speed", "mixup"}
MODEL_TYPES = ("cnn", "speech-embedding")
HEAD_FILE = "speech_head.safetensors"


class EmbeddingClassifier:
    """Standardized pretrained speech embeddings and a multinomial logistic regression (plain arrays)."""

    def __init__(self, meta: dict[str, Any], head: LinearHead, mean: np.ndarray, std: np.ndarray):
        self.meta, self.head = meta, head
        self.mean, self.std = np.asarray(mean, np.float32), np.asarray(std, np.float32)

    def targets(self, labels: list[Any], field: str = "label") -> torch.Tensor:
        return label_targets(self.meta["classes"], labels, field)

    def proba(self, x: np.ndarray) -> np.ndarray:
        lp = self.head.log_proba((np.asarray(x, np.float32) - self.mean) / self.std)
        return np.exp(apply_temperature(lp, float(self.meta.get("temperature", 1.0))))

    @classmethod
    def fit(
        cls, meta: dict[str, Any], x: np.ndarray, y: np.ndarray, c: float, seed: int, groups: list[Any] | None = None
    ) -> EmbeddingClassifier:
        """Fit on every row; the probability temperature is fitted on out-of-group predictions (groups:
        speakers, so it is learned on voices the head has not heard; without two speakers, 5 folds)."""
        clf = cls._fit_once(meta, x, y, c, seed)
        clf.meta = {**meta, "temperature": cls._temperature(meta, x, y, c, seed, groups)}
        return clf

    @classmethod
    def _fit_once(cls, meta: dict[str, Any], x: np.ndarray, y: np.ndarray, c: float, seed: int) -> EmbeddingClassifier:
        mean, std = x.mean(0), x.std(0) + 1e-6
        return cls(meta, fit_logreg((x - mean) / std, y, len(meta["classes"]), c, None, seed), mean, std)

    @classmethod
    def _temperature(
        cls, meta: dict[str, Any], x: np.ndarray, y: np.ndarray, c: float, seed: int, groups: list[Any] | None
    ) -> float:
        from sklearn.model_selection import LeaveOneGroupOut, StratifiedKFold

        g = np.asarray(["" if s is None else str(s) for s in (groups or [None] * len(y))])
        if len(set(g)) >= 2:
            folds = LeaveOneGroupOut().split(x, y, g)
        elif np.bincount(y).min() >= 5:
            folds = StratifiedKFold(5, shuffle=True, random_state=seed).split(x, y)
        else:
            return 1.0  # too few recordings per class to hold any out
        n = len(meta["classes"])
        oof, held = np.zeros((len(y), n)), np.zeros(len(y), dtype=bool)
        for tr, te in folds:
            if len(np.unique(y[tr])) < n:  # this fold's training part lacks a class: no scores from it
                continue
            part = cls._fit_once(meta, x[tr], y[tr], c, seed)
            oof[te], held[te] = part.head.log_proba((x[te] - part.mean) / part.std), True
        return fit_temperature(oof[held], y[held]) if held.any() else 1.0

    def save(self, run_dir: Path, meta_file: str) -> None:
        from safetensors.numpy import save_file

        with atomic_path(run_dir / HEAD_FILE) as tmp:
            save_file({**self.head.tensors("head"), "mean": self.mean, "std": self.std}, str(tmp))
        write_json(run_dir / meta_file, self.meta)

    @classmethod
    def load(cls, run_dir: Path, meta: dict[str, Any]) -> EmbeddingClassifier:
        from safetensors.numpy import load_file

        if not (run_dir / HEAD_FILE).exists():
            raise NotFound(f"no trained model in {run_dir} ({HEAD_FILE} missing); train the app first")
        t = load_file(str(run_dir / HEAD_FILE))
        return cls(meta, LinearHead.from_tensors(t, "head"), t["mean"], t["std"])


class Ensemble:
    """Several GridClassifiers trained with different seeds; probabilities are averaged."""

    def __init__(self, members: list[GridClassifier]):
        self.members = members
        self.meta = {**members[0].meta, "ensemble": len(members)}

    def targets(self, labels: list[Any], field: str = "label") -> torch.Tensor:
        return self.members[0].targets(labels, field)

    def proba(self, x: np.ndarray) -> np.ndarray:
        return np.mean([m.proba(x) for m in self.members], axis=0)

    def modules(self) -> nn.Module:
        """One member: its CNN (the single-model file layout); several: a ModuleList of them."""
        if len(self.members) == 1:
            return self.members[0].model
        return nn.ModuleList([m.model for m in self.members])

    def save(self, run_dir: Path, meta_file: str) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_weights(self.modules(), run_dir / WEIGHTS)
        write_json(run_dir / meta_file, self.meta)

    @classmethod
    def load(cls, run_dir: Path, meta_file: str) -> Ensemble:
        import json

        path = run_dir / meta_file
        if not path.exists() or not (run_dir / WEIGHTS).exists():
            raise NotFound(
                f"no trained model in {run_dir} ({meta_file} or {WEIGHTS} missing); train the app first"
            )
        meta = json.loads(path.read_text())
        ens = cls([GridClassifier(meta) for _ in range(int(meta.get("ensemble", 1)))])
        load_weights(ens.modules(), run_dir / WEIGHTS)
        ens.modules().eval()
        return ens


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
    inputs_are_files = True
    META = "speech_classifier.json"

    def __init__(self, config: AppConfig):
        super().__init__(config)
        self.clf: Ensemble | EmbeddingClassifier | None = None
        o = dict(config.model.options)
        self.kind = config.model.type or "cnn"
        if self.kind not in MODEL_TYPES:
            raise ConfigError(
                f"'model.type' for speech-recognition must be one of {', '.join(MODEL_TYPES)} (got {self.kind!r})"
            )
        self.source = config.model.source
        self.window_seconds = float(o.get("window_seconds", 1.6))
        self.sample_rate = int(o.get("sample_rate", 16000 if self.kind == "speech-embedding" else 8000))
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
        self.tta_speeds = self._speeds(o.get("tta_speeds") or [], "model.options.tta_speeds")

    @staticmethod
    def _speeds(value: Any, key: str) -> list[float]:
        speeds = [value] if isinstance(value, int | float) else value
        if not isinstance(speeds, list) or not all(isinstance(v, int | float) and 0.5 <= v <= 2 for v in speeds):
            raise ConfigError(f"'{key}' = {value!r}; expected a list of speed factors such as [0.9, 1.1]")
        return [float(v) for v in speeds]

    def refit_blocker(self) -> str | None:
        return None  # validation rows are only reported: every CNN keeps its last epoch, the regression has none

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

    def features(self, waves: list[np.ndarray], progress: bool = False) -> np.ndarray:
        """CNN: log-mel grids (n, 1, bands, frames); speech-embedding: pretrained embeddings (n, 96)."""
        if self.kind == "speech-embedding":
            return get_embedder(self.source, self.window_seconds).embed(waves, self.sample_rate, progress=progress)
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
    def _augment_options(self) -> tuple[list[float], float, dict[str, Any]]:
        """train.augment -> (speed copies, mixup alpha, grid augmentations)."""
        aug = dict(self.config.train.augment)
        bad = set(aug) - AUGMENT_KEYS - SPEECH_AUGMENT
        if bad:
            raise ConfigError(
                f"unknown key(s) 'train.augment.{sorted(bad)[0]}'; expected {sorted(AUGMENT_KEYS | SPEECH_AUGMENT)}"
            )
        speeds = self._speeds(aug.pop("speed", None) or [], "train.augment.speed")
        mixup = aug.pop("mixup", 0.0)
        if not isinstance(mixup, int | float) or mixup < 0:
            raise ConfigError(f"'train.augment.mixup' = {mixup!r}; expected a Beta parameter >= 0 such as 0.4")
        return speeds, float(mixup), aug

    def fit(
        self, train: AudioSet, valid: AudioSet | None, run_dir: Path, progress: bool = True
    ) -> dict[str, float]:
        """Train `model.options.ensemble` CNNs (seeds train.seed, +1, ...) on log-mels of the training
        recordings. Each keeps its last epoch (the cosine schedule has converged there): `valid` is only
        reported per epoch, never used to pick weights, so its final score is an honest held-out one."""
        if len(train) == 0:
            raise ConfigError("no training recordings: check data.path and data.split")
        if any(v is None for v in train.labels):
            raise ConfigError(
                "some recordings have no label: name files like 7_jackson_32.wav, put them in class "
                "folders, or set data.options.pattern"
            )
        speeds, mixup, aug = self._augment_options()
        if self.kind == "speech-embedding":
            return self._fit_embedding(train, valid, speeds, mixup, aug, progress)
        o = dict(self.config.model.options)
        n_models = o.get("ensemble", 1)
        if not isinstance(n_models, int) or n_models < 1:
            raise ConfigError(f"'model.options.ensemble' = {n_models!r}; expected a number of models >= 1")
        waves, labels = list(train.waves), list(train.labels)
        for f in speeds:  # extra copies played faster/slower (tempo and pitch), fixed once before training
            waves += [speed_perturb(w, float(f)) for w in train.waves]
            labels += list(train.labels)
        x = self.features(waves)
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
            "tta_speeds": self.tta_speeds,
        }
        va = (self.features(valid.waves), valid.labels) if valid is not None and len(valid) else None
        members, results = [], []
        for k in range(n_models):
            seed = self.config.train.seed + k
            torch.manual_seed(seed)  # reproducible initial weights
            clf = GridClassifier(meta)
            member_dir = Path(run_dir) if n_models == 1 else Path(run_dir) / "checkpoint" / f"member-{k}"
            results.append(
                self._fit_one(clf, x, labels, va, member_dir, seed, k * self.config.train.epochs, mixup, aug, progress)
            )
            members.append(clf)
        self.clf = Ensemble(members)
        out = {k: float(np.mean([r[k] for r in results])) for k in results[0]}  # members' mean
        if va is not None and n_models > 1:  # the ensemble's own validation scores
            p, y = self.clf.proba(va[0]), self.clf.targets(va[1]).numpy()
            out["valid_loss"] = float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-9, 1)).mean())
            out["valid_accuracy"] = float((p.argmax(1) == y).mean())
        return out

    def _fit_embedding(
        self,
        train: AudioSet,
        valid: AudioSet | None,
        speeds: list[float],
        mixup: float,
        aug: dict[str, Any],
        progress: bool,
    ) -> dict[str, float]:
        """Embed every recording once (and its speed copies) and fit the logistic regression."""
        if mixup or aug:
            raise ConfigError(
                f"'train.augment.{'mixup' if mixup else sorted(aug)[0]}' applies to model.type cnn; "
                "speech-embedding takes only train.augment.speed"
            )
        c = self.config.model.options.get("c", 0.03)
        if not isinstance(c, int | float) or c <= 0:
            raise ConfigError(f"'model.options.c' = {c!r}; expected a positive number such as 0.03")
        waves = list(train.waves) + [speed_perturb(w, f) for f in speeds for w in train.waves]
        labels = list(train.labels) * (1 + len(speeds))
        meta = {
            "model_type": self.kind,
            "classes": sorted(set(train.labels), key=str),
            "sample_rate": self.sample_rate,
            "window_seconds": self.window_seconds,
            "source": self.source,
            "c": float(c),
            "tta_speeds": self.tta_speeds,
        }
        x = self.features(waves, progress)
        y = label_targets(meta["classes"], labels).numpy()
        speakers = list(train.speakers) * (1 + len(speeds))
        self.clf = EmbeddingClassifier.fit(meta, x, y, float(c), self.config.train.seed, groups=speakers)
        out = self._scores(self.clf.proba(x[: len(train)]), train.labels, "train")  # no TTA: the fitted rows
        if valid is not None and len(valid):
            out.update(self._scores(self.proba(valid.waves), valid.labels, "valid"))
        self.on_epoch_end(1, out)
        return out

    def _scores(self, p: np.ndarray, labels: list[Any], prefix: str) -> dict[str, float]:
        y = self._need().targets(labels, f"{prefix} label").numpy()
        return {
            f"{prefix}_loss": float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-9, 1)).mean()),
            f"{prefix}_accuracy": float((p.argmax(1) == y).mean()),
        }

    def _fit_one(
        self,
        clf: GridClassifier,
        x: np.ndarray,
        y: list[Any],
        valid: tuple[np.ndarray, list[Any]] | None,
        run_dir: Path,
        seed: int,
        offset: int,
        mixup: float,
        aug: dict[str, Any],
        progress: bool,
    ) -> dict[str, float]:
        """One CNN: grid augmentation (luodi.tasks.image.augment_batch) and mixup of pairs of recordings;
        its epochs are reported to on_epoch_end as `offset` + 1, 2, ..."""
        t = self.config.train
        o = self.config.model.options
        ys = clf.targets(y)
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(torch.from_numpy(x), ys),
            batch_size=t.batch_size,
            shuffle=True,
            drop_last=len(ys) > t.batch_size,
        )
        smoothing = float(o.get("label_smoothing", 0.0))

        def step(model: nn.Module, batch: Any) -> torch.Tensor:
            xb, yb = batch
            xb = augment_batch(xb, aug)
            if not mixup:
                return F.cross_entropy(model(xb), yb, label_smoothing=smoothing)
            lam = float(torch.distributions.Beta(mixup, mixup).sample())
            j = torch.randperm(len(xb))
            out = model(lam * xb + (1 - lam) * xb[j])
            return lam * F.cross_entropy(out, yb, label_smoothing=smoothing) + (1 - lam) * F.cross_entropy(
                out, yb[j], label_smoothing=smoothing
            )

        eval_fn = None
        if valid is not None:
            vx, vy = valid[0], clf.targets(valid[1], "valid label").numpy()

            def eval_fn(model: nn.Module) -> dict[str, float]:
                p = clf.proba(vx)
                return {
                    "valid_loss": float(-np.log(np.clip(p[np.arange(len(vy)), vy], 1e-9, 1)).mean()),
                    "valid_accuracy": float((p.argmax(1) == vy).mean()),
                }

        cfg = LoopConfig.from_train(
            t,
            seed=seed,
            weight_decay=float(o.get("weight_decay", 5e-4)),
            schedule=o.get("schedule", "onecycle"),
            threads=training_threads(),
            monitor="epoch",  # the last epoch: never chosen by the held-out data
            mode="max",
        )

        def on_epoch(epoch: int, logs: dict[str, float]) -> None:  # members' epochs numbered one after another
            self.on_epoch_end(offset + epoch, logs)

        res = train_loop(clf.model, loader, step, eval_fn, run_dir, cfg, progress=progress, on_epoch=on_epoch)
        return {k: v for k, v in res.best.items() if k != "epoch"}

    # inference
    def _need(self) -> Ensemble | EmbeddingClassifier:
        if self.clf is None:
            raise NotFound("the model is not trained or loaded yet: call fit() or load(run_dir) first")
        return self.clf

    def proba(self, waves: list[np.ndarray]) -> np.ndarray:
        """Class probabilities; with tta_speeds, averaged over the recording played at each speed."""
        clf = self._need()
        speeds = self.tta_speeds or [1.0]
        return np.mean(
            [clf.proba(self.features([w if f == 1 else speed_perturb(w, f) for w in waves])) for f in speeds], axis=0
        )

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
        out = classification_result(clf, self.proba(waves))
        return [{"text": str(o["label"]), **o} for o in out]

    def evaluate(self, data: AudioSet) -> dict[str, Any]:
        clf = self._need()
        if any(v is None for v in data.labels):
            raise BadRequest("evaluation recordings have no labels (file names like 7_jackson_32.wav needed)")
        return classification_evaluation(clf, self.proba(data.waves), data.labels)

    def save(self, run_dir: Path) -> None:
        self._need().save(Path(run_dir), self.META)

    def load(self, run_dir: Path) -> None:
        import json

        path = Path(run_dir) / self.META
        m = json.loads(path.read_text()) if path.exists() else {}
        if m.get("model_type") == "speech-embedding":
            self.clf = EmbeddingClassifier.load(Path(run_dir), m)
            self.kind, self.sample_rate, self.source = m["model_type"], m["sample_rate"], m.get("source")
            self.window_seconds, self.tta_speeds = m["window_seconds"], m.get("tta_speeds", [])
            return
        self.clf = Ensemble.load(Path(run_dir), self.META)
        self.kind = "cnn"
        m = self.clf.meta
        self.sample_rate, self.n_mels, self.hop_ms = m["sample_rate"], m["n_mels"], m["hop_ms"]
        self.frames = m["size"][1]
        # models saved before these options existed used the old fixed behaviour
        self.trim_db, self.norm = m.get("trim_db", 0.0), m.get("normalize", "mean")
        self.fit_mode = m.get("fit", "pad")
        self.cepstra, self.lifter = m.get("cepstra", 0), m.get("lifter", 0)
        self.floor_db = m.get("floor_db", 0.0)
        self.tta_speeds = m.get("tta_speeds", [])

    def input_model(self) -> type[BaseModel]:
        return SpeechInput

    def output_model(self) -> type[BaseModel]:
        return SpeechOutput
