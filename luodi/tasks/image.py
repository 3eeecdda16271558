"""image-classification: a small CNN with on-the-fly augmentation (luodi.tasks.grid_cnn).

App keys used: data.format (idx | image-folder | sklearn:digits), data.options.images/labels (IDX names),
data.split {valid: fraction or count, seed, stratify, shuffle: false = hold out the last part},
model.options (luodi.options.image.ImageClassificationOptions: width, dropout, size, channels, ...),
train {epochs, lr, batch_size, early_stopping, seed, class_weights, resample, max_minutes, augment: {rotate,
shift, scale, scale_x, scale_y, flip, noise, time_mask, freq_mask}}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, Field

from luodi.config import AppConfig, model_options
from luodi.data.images import (
    ImageSet,
    guess_image_format,
    image_from_value,
    read_idx_dataset,
    read_image_folder,
    read_sklearn_digits,
)
from luodi.errors import ConfigError
from luodi.options.image import ImageClassificationOptions
from luodi.tasks.file_classifier import FileClassifierTask, classification_result
from luodi.tasks.grid_cnn import GridClassifier, check_augment

STEPS = 32  # integrated-gradients steps of an explanation to start with (more where its error is above 1 %)


class ImageInput(BaseModel):
    image: str | list[Any] | None = Field(
        None, description="png/jpg as base64 (or a data: URL), a server-side file path, or an array of pixels"
    )
    path: str | None = Field(None, description="image file path (alternative to `image`)")


class ImageOutput(BaseModel):
    label: int | str
    score: float
    probabilities: dict[str, float]


class ImageClassificationTask(FileClassifierTask):
    name = "image-classification"
    META = "image_classifier.json"
    FIELD = "image"
    WHAT = "base64 png/jpg, file path or pixel array"
    NO_LABELS = "evaluation data has no labels (IDX labels file or class folders needed)"

    def __init__(self, config: AppConfig):
        super().__init__(config)
        self.opts: ImageClassificationOptions = model_options(config)
        self.clf: GridClassifier | None = None

    def privacy_blocker(self) -> str | None:
        """DP-SGD accounts for one model trained on each example as it is: adversarial examples are crafted with
        the model's own gradients, outside the accounting."""
        if self.config.train.adversarial:
            return "adversarial training is not covered by the privacy accounting"
        return None

    # data
    def read(self, path: str | None) -> ImageSet:
        d = self.config.data
        if d.format == "sklearn:digits" and path is None:
            return read_sklearn_digits()
        p = self.data_path(path, "give IDX files, an image folder, or data.format: sklearn:digits")
        fmt = d.format
        fmt = guess_image_format(p) if (path is not None or not fmt or fmt.startswith("sklearn:")) else fmt
        if fmt == "idx":
            return read_idx_dataset(p, d.options if path is None else {})
        if fmt == "image-folder":
            return read_image_folder(p, self.opts.image_size() or (32, 32), self.opts.channels)
        raise ConfigError(
            f"'data.format' = '{fmt}' is not an image format; use idx, image-folder or sklearn:digits",
            param="data.format",
        )

    def data_labels(self, data: ImageSet) -> list[Any]:
        return data.y

    # training
    def fit(self, train: ImageSet, valid: ImageSet | None, run_dir: Path, progress: bool = True) -> None:
        self.check_labelled(train, "images", "an IDX labels file or class folders are needed")
        aug = dict(self.config.train.augment)
        check_augment(aug)
        x = train.x
        classes = sorted(set(train.y), key=lambda v: (str(type(v)), v))
        meta = {
            "classes": classes,
            "channels": int(x.shape[1]),
            "size": list(x.shape[2:]),
            "width": self.opts.width,
            "dropout": self.opts.dropout,
            "arch": self.opts.arch,  # flat: the model of single-step adversarial training
            "hidden": self.opts.hidden,
            "activation": self.opts.activation,
            "mean": float(x.mean()),
            "std": float(x.std() or 1.0),
            "background": border_mean(x),
        }
        torch.manual_seed(self.config.train.seed)  # reproducible initial weights
        self.clf = GridClassifier(meta)
        va = (valid.x, valid.y) if valid is not None and len(valid) else None
        self.clf.fit(
            self.config.train,
            x,
            train.y,
            va,
            Path(run_dir),
            aug=aug,
            label_smoothing=self.opts.label_smoothing,
            weight_decay=self.opts.weight_decay,
            schedule=self.opts.schedule,
            keep_last=self.opts.keep_last,
            adversarial=True,
            progress=progress,
            on_epoch=self.on_epoch_end,
        )

    # inference
    def pixels(self, values: list[Any]) -> np.ndarray:
        """Request values (base64, paths, pixel arrays) as the model's (N, C, H, W) input."""
        clf = self.need()
        size, ch = tuple(clf.meta["size"]), clf.meta["channels"]
        xs = []
        for i, value in enumerate(values):
            img = image_from_value(value, size, ch, field=self.field_name(i, len(values)))
            if ch == 1 and abs(border_mean(img[None]) - clf.meta["background"]) > 0.5:
                img = 1.0 - img  # e.g. dark ink on white paper for a model trained on white-on-black MNIST
            xs.append(img)
        return np.stack(xs).astype(np.float32) if xs else np.zeros((0, ch, *size), np.float32)

    def values_proba(self, values: list[Any], records: list[dict[str, Any]]) -> np.ndarray:
        return self.need().proba(self.pixels(values))

    def explain(self, records: list[dict[str, Any]], top: int | None = None) -> list[dict[str, Any]]:
        """Predictions with an `explanation` each: integrated gradients (Captum) of the predicted class's logit
        over the pixels the model reads, from a black image, summed into a coarse grid (7 x 7 blocks, or the
        pixels of an image up to 8 x 8) with the `top` blocks (default 5) and the completeness error (32 steps,
        refined up to 512 where it is above 1 %: luodi.evaluate.attributions.grid_attributions)."""
        from luodi.evaluate.attributions import grid_attributions, pixel_summary, sig

        clf = self.need()
        x = self.pixels(self.request_values(records))
        proba = clf.proba(x)
        target = proba.argmax(1)
        ig = grid_attributions(clf.pixel_model(), x, target, STEPS)
        classes = clf.meta["classes"]
        return [
            {
                **out,
                "explanation": {
                    "target": f"logit of '{classes[t]}'",
                    "method": "integrated-gradients",
                    "steps": int(ig["steps"][i]),
                    "baseline": "black image",
                    "base": sig(ig["base"][i]),
                    "completeness_error": sig(ig["error"][i]),
                    **pixel_summary(ig["attr"][i], 5 if top is None else top),
                },
            }
            for i, (t, out) in enumerate(zip(target, classification_result(classes, proba), strict=True))
        ]

    def model_input(self, data: ImageSet) -> np.ndarray:
        """A data set's images as the model's (N, C, H, W) pixels in [0, 1] (resized when they differ)."""
        clf = self.need()
        x = data.x
        if tuple(x.shape[1:]) != (clf.meta["channels"], *clf.meta["size"]):
            x = self.pixels(list(x))
        return x

    def data_proba(self, data: ImageSet) -> np.ndarray:
        return self.need().proba(self.model_input(data))

    def evaluate(self, data: ImageSet) -> dict[str, Any]:
        """Classification metrics; with train.adversarial also `robust_accuracy` (under PGD at its eps)."""
        out = super().evaluate(data)
        adv = self.config.train.adversarial
        if adv is not None:
            clf = self.need()
            out["robust_accuracy"] = clf.robust_accuracy(self.model_input(data), clf.targets(data.y, "labels"), adv)
        return out

    def load(self, run_dir: Path) -> None:
        self.clf = GridClassifier.load(Path(run_dir), self.META)

    def input_model(self) -> type[BaseModel]:
        return ImageInput

    def output_model(self) -> type[BaseModel]:
        return ImageOutput


def border_mean(x: np.ndarray) -> float:
    """Mean of the one-pixel frame of (N, C, H, W) images: the background level."""
    frame = np.concatenate([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], axis=-1)
    return float(frame.mean())
