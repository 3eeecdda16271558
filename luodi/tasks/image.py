"""image-classification: a small CNN with on-the-fly augmentation, trained with the shared torch loop.

`GridClassifier` (a CNN over (C, H, W) grids, its augmentation, fitting and persistence) is reused by the
speech task, whose log-mel spectrograms are one-channel grids too.

App keys used: data.format (idx | image-folder | sklearn:digits), data.options.images/labels (IDX names),
data.split {valid: fraction or count, seed, shuffle: false = hold out the last part},
model.options {width, dropout, size: [H, W], channels}, train {epochs, lr, batch_size, early_stopping,
seed, class_weights, max_minutes, augment: {rotate, shift, scale, scale_x, scale_y, flip, noise,
time_mask, freq_mask}}.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import nn

from luodi.atomic import write_json
from luodi.config import AppConfig
from luodi.data.images import (
    ImageSet,
    guess_image_format,
    image_from_value,
    read_idx_dataset,
    read_image_folder,
    read_sklearn_digits,
)
from luodi.errors import BadRequest, ConfigError, NotFound
from luodi.tasks.base import TaskBase
from luodi.train.torch_loop import LoopConfig, load_weights, save_weights, train_loop

WEIGHTS = "model.safetensors"
AUGMENT_KEYS = {"rotate", "shift", "scale", "scale_x", "scale_y", "flip", "noise", "time_mask", "freq_mask"}


# --- model ---------------------------------------------------------------------------------------------


class SmallCNN(nn.Module):
    """[conv-bn-relu x2, maxpool] per stage, a last conv, global average pooling, dropout, linear."""

    def __init__(
        self, channels: int, classes: int, size: tuple[int, int], width: int = 32, dropout: float = 0.3
    ):
        super().__init__()
        stages = max(1, min(3, int(math.log2(max(1, min(size) // 4)))))
        layers: list[nn.Module] = []
        c_in = channels
        for i in range(stages):
            c = width * 2**i
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
            layers += [
                nn.Conv2d(c, c, 3, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            c_in = c
        c = width * 2**stages
        layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(c, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def augment_batch(x: torch.Tensor, aug: dict[str, Any]) -> torch.Tensor:
    """Random affine (rotate degrees, shift fraction or [x, y], scale / scale_x / scale_y), horizontal flip,
    Gaussian noise, and SpecAugment-style masks (time_mask columns, freq_mask rows), per sample."""
    n = x.shape[0]
    if not aug:
        return x

    def uniform(r: float) -> torch.Tensor:
        return (torch.rand(n) * 2 - 1) * float(r)

    if any(aug.get(k) for k in ("rotate", "shift", "scale", "scale_x", "scale_y")):
        ang = uniform(aug.get("rotate", 0)) * math.pi / 180
        s = 1 + uniform(aug.get("scale", 0))
        sx = s * (1 + uniform(aug.get("scale_x", 0)))
        sy = s * (1 + uniform(aug.get("scale_y", 0)))
        shift = aug.get("shift", 0)  # a fraction, or [horizontal, vertical]
        shift_x, shift_y = (shift, shift) if isinstance(shift, int | float) else (shift[0], shift[1])
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0], theta[:, 0, 1] = torch.cos(ang) / sx, -torch.sin(ang) / sx
        theta[:, 1, 0], theta[:, 1, 1] = torch.sin(ang) / sy, torch.cos(ang) / sy
        theta[:, 0, 2], theta[:, 1, 2] = uniform(2 * shift_x), uniform(2 * shift_y)  # grid spans [-1, 1]
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    if aug.get("flip"):
        flip = torch.rand(n) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if aug.get("noise"):
        x = x + torch.randn_like(x) * float(aug["noise"]) * torch.rand(n, 1, 1, 1)
    for key, dim in (("time_mask", -1), ("freq_mask", -2)):
        width = int(aug.get(key, 0))
        if width:
            length = x.shape[dim]
            w = torch.randint(0, width + 1, (n,))
            start = (torch.rand(n) * (length - w).clamp(min=1)).long()
            pos = torch.arange(length)
            mask = (pos[None] >= start[:, None]) & (pos[None] < (start + w)[:, None])
            shape = (n, 1, 1, length) if dim == -1 else (n, 1, length, 1)
            x = x.masked_fill(mask.view(shape), 0.0)
    return x


# --- a CNN classifier over grids, shared by image and speech -------------------------------------------


def label_targets(classes: list[Any], labels: list[Any], field: str = "label") -> torch.Tensor:
    """Labels -> class indices; a label not seen in training is a BadRequest naming `field`."""
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({str(v) for v in labels if v not in index})
    if unknown:
        raise BadRequest(
            f"'{field}': labels {unknown[:5]} were not seen in training; known: {classes[:20]}",
            param=field,
        )
    return torch.tensor([index[v] for v in labels])


class GridClassifier:
    """Classes, normalization, the CNN and its training; persisted as safetensors + JSON."""

    def __init__(self, meta: dict[str, Any]):
        self.meta = meta  # classes, channels, size, width, dropout, mean, std (+ task extras)
        self.model = SmallCNN(
            meta["channels"], len(meta["classes"]), tuple(meta["size"]), meta["width"], meta["dropout"]
        )

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.meta["mean"]) / self.meta["std"]

    def targets(self, labels: list[Any], field: str = "label") -> torch.Tensor:
        return label_targets(self.meta["classes"], labels, field)

    @torch.no_grad()
    def proba(self, x: np.ndarray, batch: int = 256) -> np.ndarray:
        self.model.eval()
        out = [
            F.softmax(self.model(self.normalize(torch.from_numpy(x[i : i + batch]))), 1)
            for i in range(0, len(x), batch)
        ]
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.meta["classes"])), np.float32)

    def fit(
        self,
        config: AppConfig,
        x: np.ndarray,
        y: list[Any],
        valid: tuple[np.ndarray, list[Any]] | None,
        run_dir: Path,
        progress: bool,
        on_epoch: Any,
    ) -> dict[str, float]:
        t = config.train
        aug = dict(t.augment)
        bad = set(aug) - AUGMENT_KEYS
        if bad:
            raise ConfigError(
                f"unknown key(s) 'train.augment.{sorted(bad)[0]}'; expected {sorted(AUGMENT_KEYS)}"
            )
        torch.manual_seed(t.seed)
        ys = self.targets(y)
        xs = torch.from_numpy(x)
        weight = None
        if t.class_weights == "balanced":
            counts = torch.bincount(ys, minlength=len(self.meta["classes"])).float().clamp(min=1)
            weight = len(ys) / (len(counts) * counts)
        if t.resample != "none":
            from luodi.data.balance import resample

            idx = torch.from_numpy(resample(ys.numpy(), t.resample, t.seed))
            xs, ys = xs[idx], ys[idx]
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(xs, ys),
            batch_size=t.batch_size,
            shuffle=True,
            drop_last=len(ys) > t.batch_size,
        )
        smoothing = float(config.model.options.get("label_smoothing", 0.0))

        def step(model: nn.Module, batch: Any) -> torch.Tensor:
            xb, yb = batch
            return F.cross_entropy(
                model(self.normalize(augment_batch(xb, aug))), yb, weight=weight, label_smoothing=smoothing
            )

        eval_fn = None
        if valid is not None and len(valid[0]):
            vx, vy = valid[0], self.targets(valid[1], "valid label").numpy()

            def eval_fn(model: nn.Module) -> dict[str, float]:
                p = self.proba(vx)
                return {
                    "valid_loss": float(-np.log(np.clip(p[np.arange(len(vy)), vy], 1e-9, 1)).mean()),
                    "valid_accuracy": float((p.argmax(1) == vy).mean()),
                }

        cfg = LoopConfig.from_train(
            t,
            weight_decay=float(config.model.options.get("weight_decay", 5e-4)),
            schedule=config.model.options.get("schedule", "onecycle"),
            threads=training_threads(),
            monitor="valid_accuracy" if eval_fn else "loss",
            mode="max" if eval_fn else "min",
        )
        res = train_loop(
            self.model, loader, step, eval_fn, run_dir, cfg, progress=progress, on_epoch=on_epoch
        )
        return {k: v for k, v in res.best.items() if k != "epoch"}

    def save(self, run_dir: Path, meta_file: str) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_weights(self.model, run_dir / WEIGHTS)
        write_json(run_dir / meta_file, self.meta)

    @classmethod
    def load(cls, run_dir: Path, meta_file: str) -> GridClassifier:
        path = run_dir / meta_file
        if not path.exists() or not (run_dir / WEIGHTS).exists():
            raise NotFound(
                f"no trained model in {run_dir} ({meta_file} or {WEIGHTS} missing); train the app first"
            )
        clf = cls(json.loads(path.read_text()))
        load_weights(clf.model, run_dir / WEIGHTS)
        clf.model.eval()
        return clf


def training_threads() -> int:
    """Small models train fastest single-threaded on a shared CPU; LUODI_THREADS overrides."""
    if "LUODI_THREADS" in os.environ:
        from luodi.settings import get_settings

        return max(1, get_settings().threads)
    return 1


def classification_result(clf: GridClassifier, proba: np.ndarray, top: int = 10) -> list[dict[str, Any]]:
    """Per row: the predicted label, its probability and the most likely classes."""
    classes = clf.meta["classes"]
    out = []
    for p in proba:
        order = np.argsort(-p)[:top]
        out.append(
            {
                "label": classes[order[0]],
                "score": float(p[order[0]]),
                "probabilities": {str(classes[i]): round(float(p[i]), 6) for i in order},
            }
        )
    return out


def classification_evaluation(clf: GridClassifier, proba: np.ndarray, labels: list[Any]) -> dict[str, Any]:
    from luodi.evaluate.metrics import classification_report_data

    y = clf.targets(labels, "data labels").numpy()
    proba = proba.astype(np.float64)
    proba /= proba.sum(1, keepdims=True)
    out = classification_report_data(y, proba, [str(c) for c in clf.meta["classes"]])
    out["n"] = len(y)
    return out


def split_indices(n: int, spec: dict[str, Any], labels: list[Any] | None) -> tuple[np.ndarray, np.ndarray]:
    """data.split {valid: fraction (<1) or count (>=1), seed, shuffle} -> (train_idx, valid_idx)."""
    allowed = {"valid", "seed", "shuffle", "stratify"}
    bad = set(spec) - allowed
    if bad:
        raise ConfigError(f"unknown key 'data.split.{sorted(bad)[0]}'; expected one of {sorted(allowed)}")
    v = float(spec.get("valid", 0.1))
    n_valid = int(round(v * n)) if v < 1 else int(v)
    if not 0 < n_valid < n:
        raise ConfigError(f"'data.split.valid' = {v} leaves no train or no validation rows out of {n}")
    if not spec.get("shuffle", True):
        return np.arange(n - n_valid), np.arange(n - n_valid, n)
    from sklearn.model_selection import train_test_split

    strat = labels if spec.get("stratify", True) and labels is not None else None
    if strat is not None and (min(np.unique(np.asarray([str(v) for v in strat]), return_counts=True)[1]) < 2):
        strat = None
    tr, va = train_test_split(
        np.arange(n),
        test_size=n_valid,
        random_state=int(spec.get("seed", 0)),
        stratify=[str(v) for v in strat] if strat is not None else None,
    )
    return np.sort(tr), np.sort(va)


# --- the task ------------------------------------------------------------------------------------------


class ImageInput(BaseModel):
    image: str | list[Any] | None = Field(
        None, description="png/jpg as base64 (or a data: URL), a server-side file path, or an array of pixels"
    )
    path: str | None = Field(None, description="image file path (alternative to `image`)")


class ImageOutput(BaseModel):
    label: int | str
    score: float
    probabilities: dict[str, float]


class ImageClassificationTask(TaskBase):
    name = "image-classification"
    inputs_are_files = True
    META = "image_classifier.json"

    def __init__(self, config: AppConfig):
        super().__init__(config)
        self.clf: GridClassifier | None = None

    # data
    def read(self, path: str | None) -> ImageSet:
        from luodi.data.readers import expand_path

        d = self.config.data
        fmt = d.format
        if fmt == "sklearn:digits" and path is None:
            return read_sklearn_digits()
        src = path if path is not None else d.path
        if src is None:
            raise ConfigError(
                "'data.path' is missing: give IDX files, an image folder, or data.format: sklearn:digits"
            )
        p = expand_path(src)
        if not p.exists():
            raise ConfigError(
                f"'data.path': '{p}' not found (from '{src}'); set LUODI_DATASETS or fix the path"
            )
        fmt = guess_image_format(p) if (path is not None or not fmt or fmt.startswith("sklearn:")) else fmt
        if fmt == "idx":
            return read_idx_dataset(p, d.options if path is None else {})
        if fmt == "image-folder":
            return read_image_folder(
                p, self._size_from_options() or (32, 32), int(self._opts().get("channels", 3))
            )
        raise ConfigError(
            f"'data.format' = '{fmt}' is not an image format; use idx, image-folder or sklearn:digits"
        )

    def split(self, data: ImageSet) -> tuple[ImageSet, ImageSet]:
        tr, va = split_indices(len(data), dict(self.config.data.split), data.y)
        return data.subset(tr), data.subset(va)

    def labels(self, data: ImageSet) -> list[Any]:
        return [str(v) for v in data.y]

    def folds(self, data: ImageSet, k: int, seed: int = 0) -> list[tuple[ImageSet, ImageSet]]:
        from luodi.data.split import kfold_indices

        return [
            (data.subset(tr), data.subset(va))
            for tr, va in kfold_indices(len(data), k, seed, self.labels(data))
        ]

    # training
    def _opts(self) -> dict[str, Any]:
        return dict(self.config.model.options)

    def _size_from_options(self) -> tuple[int, int] | None:
        s = self._opts().get("size")
        if s is None:
            return None
        if isinstance(s, int):
            return (s, s)
        if not (isinstance(s, list) and len(s) == 2):
            raise ConfigError(f"'model.options.size' must be an int or [height, width] (got {s!r})")
        return (int(s[0]), int(s[1]))

    def fit(
        self, train: ImageSet, valid: ImageSet | None, run_dir: Path, progress: bool = True
    ) -> dict[str, float]:
        if len(train) == 0:
            raise ConfigError("no training images: check data.path and data.split")
        if any(v is None for v in train.y):
            raise ConfigError("training images have no labels (IDX labels file or class folders needed)")
        o = self._opts()
        x = train.x
        classes = sorted(set(train.y), key=lambda v: (str(type(v)), v))
        meta = {
            "classes": classes,
            "channels": int(x.shape[1]),
            "size": list(x.shape[2:]),
            "width": int(o.get("width", 32)),
            "dropout": float(o.get("dropout", 0.3)),
            "mean": float(x.mean()),
            "std": float(x.std() or 1.0),
            "background": _border_mean(x),
        }
        torch.manual_seed(self.config.train.seed)  # reproducible initial weights
        self.clf = GridClassifier(meta)
        va = (valid.x, valid.y) if valid is not None and len(valid) else None
        return self.clf.fit(self.config, x, train.y, va, Path(run_dir), progress, self.on_epoch_end)

    # inference
    def _need(self) -> GridClassifier:
        if self.clf is None:
            raise NotFound("the model is not trained or loaded yet: call fit() or load(run_dir) first")
        return self.clf

    def _pixels(self, records: list[dict[str, Any]]) -> np.ndarray:
        clf = self._need()
        size, ch = tuple(clf.meta["size"]), clf.meta["channels"]
        xs = []
        for i, r in enumerate(records):
            if not isinstance(r, dict):
                raise BadRequest(f"input {i} must be an object with 'image' or 'path'", param="image")
            value = r.get("image", r.get("path"))
            if value is None:
                raise BadRequest(
                    f"input {i}: 'image' is missing (base64 png/jpg, file path or pixel array)", param="image"
                )
            img = image_from_value(value, size, ch, field=f"image[{i}]" if len(records) > 1 else "image")
            if ch == 1 and abs(_border_mean(img[None]) - clf.meta["background"]) > 0.5:
                img = 1.0 - img  # e.g. dark ink on white paper for a model trained on white-on-black MNIST
            xs.append(img)
        return np.stack(xs).astype(np.float32) if xs else np.zeros((0, ch, *size), np.float32)

    def predict(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        clf = self._need()
        return classification_result(clf, clf.proba(self._pixels(records)))

    def evaluate(self, data: ImageSet) -> dict[str, Any]:
        clf = self._need()
        if any(v is None for v in data.y):
            raise BadRequest("evaluation data has no labels (IDX labels file or class folders needed)")
        x = data.x
        if tuple(x.shape[1:]) != (clf.meta["channels"], *clf.meta["size"]):
            x = self._pixels([{"image": img} for img in x])
        return classification_evaluation(clf, clf.proba(x), data.y)

    def save(self, run_dir: Path) -> None:
        self._need().save(Path(run_dir), self.META)

    def load(self, run_dir: Path) -> None:
        self.clf = GridClassifier.load(Path(run_dir), self.META)

    def input_model(self) -> type[BaseModel]:
        return ImageInput

    def output_model(self) -> type[BaseModel]:
        return ImageOutput


def _border_mean(x: np.ndarray) -> float:
    """Mean of the one-pixel frame of (N, C, H, W) images: the background level."""
    frame = np.concatenate([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], axis=-1)
    return float(frame.mean())
