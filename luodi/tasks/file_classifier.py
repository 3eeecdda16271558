"""The shared base of image and speech apps: one labelled file (an image, a recording) per prediction.

`FileClassifierTask` holds what both do the same way: finding the data path, the validation split and folds,
turning request records into file values, the prediction and evaluation output, and persistence of the
classifier (`clf`, any object with `meta`, `proba`, `targets` and `save`). A subclass reads its formats,
turns values into features and fits its classifier.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from luodi.data.split import held_out, kfold_indices, split_indices
from luodi.errors import BadRequest, ConfigError, NotFound
from luodi.tasks.base import TaskBase


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


def loss_and_accuracy(proba: np.ndarray, y: np.ndarray, prefix: str = "valid") -> dict[str, float]:
    """Mean log loss and accuracy of class probabilities against class indices."""
    return {
        f"{prefix}_loss": float(-np.log(np.clip(proba[np.arange(len(y)), y], 1e-9, 1)).mean()),
        f"{prefix}_accuracy": float((proba.argmax(1) == y).mean()),
    }


def classification_result(classes: list[Any], proba: np.ndarray, top: int = 10) -> list[dict[str, Any]]:
    """Per row: the predicted label, its probability and the most likely classes."""
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


def classification_evaluation(classes: list[Any], proba: np.ndarray, labels: list[Any]) -> dict[str, Any]:
    """The classification report (accuracy, F1, confusion material) of probabilities against labels."""
    from luodi.evaluate.metrics import classification_report_data

    y = label_targets(classes, labels, "data labels").numpy()
    proba = proba.astype(np.float64)
    proba /= proba.sum(1, keepdims=True)
    out = classification_report_data(y, proba, [str(c) for c in classes])
    out["n"] = len(y)
    return out


class FileClassifierTask(TaskBase):
    """Data path, split, folds, request values, predict / evaluate output and save / load for one-file inputs."""

    inputs_are_files = True
    META: ClassVar[str]  # the classifier's JSON in the run folder
    FIELD: ClassVar[str]  # the request field holding the file ("image", "audio")
    WHAT: ClassVar[str]  # e.g. "wav file path, base64 wav or samples" (for error messages)
    NO_LABELS: ClassVar[str]  # the error for unlabelled evaluation data
    SPLIT_KEYS: ClassVar[tuple[str, ...]] = ("valid", "seed", "shuffle", "stratify")
    clf: Any

    # --- hooks ---------------------------------------------------------------------------------------
    def data_labels(self, data: Any) -> list[Any]:
        """The labels of a data set as read (None where a file has none)."""
        raise NotImplementedError

    def held_rows(self, data: Any) -> np.ndarray | None:
        """A mask of rows that form the validation set on their own (None: a random split)."""
        return None

    def data_proba(self, data: Any) -> np.ndarray:
        """Class probabilities of every file of a data set."""
        raise NotImplementedError

    def values_proba(self, values: list[Any], records: list[dict[str, Any]]) -> np.ndarray:
        """Class probabilities of request values (one per record)."""
        raise NotImplementedError

    # --- data ----------------------------------------------------------------------------------------
    def data_path(self, path: str | None, missing: str) -> Path:
        """`path` (or data.path) expanded and checked; `missing` says what to give when neither is set."""
        from luodi.data.readers import expand_path

        src = path if path is not None else self.config.data.path
        if src is None:
            raise ConfigError(f"'data.path' is missing: {missing}", param="data.path")
        p = expand_path(src)
        if not p.exists():
            raise ConfigError(
                f"'data.path': '{p}' not found (from '{src}'); set LUODI_DATASETS or fix the path", param="data.path"
            )
        return p

    def labels(self, data: Any) -> list[Any]:
        return [str(v) for v in self.data_labels(data)]

    def split(self, data: Any) -> tuple[Any, Any]:
        """Held rows (speakers) when the task marks some; otherwise the seeded split, in file order."""
        split = self.config.data.split
        split.only(self.name, *self.SPLIT_KEYS)
        held = self.held_rows(data)
        if held is not None:
            tr, va = held_out(held)
        else:
            tr, va = (np.sort(i) for i in split_indices(len(data), split, self.labels(data)))
        return data.subset(tr), data.subset(va)

    def folds(self, data: Any, k: int, seed: int = 0) -> list[tuple[Any, Any]]:
        return [
            (data.subset(tr), data.subset(va))
            for tr, va in kfold_indices(len(data), k, seed, self.labels(data))
        ]

    def check_labelled(self, data: Any, what: str, hint: str) -> None:
        """Training data with an unlabelled file is a ConfigError."""
        if len(data) == 0:
            raise ConfigError(f"no training {what}: check data.path and data.split")
        if any(v is None for v in self.data_labels(data)):
            raise ConfigError(f"some training {what} have no label: {hint}")

    # --- inference -----------------------------------------------------------------------------------
    def need(self) -> Any:
        if self.clf is None:
            raise NotFound("the model is not trained or loaded yet: call fit() or load(run_dir) first")
        return self.clf

    def request_values(self, records: list[dict[str, Any]]) -> list[Any]:
        """The file value of each record (`FIELD`, or `path`), with errors naming the record."""
        values = []
        for i, r in enumerate(records):
            if not isinstance(r, dict):
                raise BadRequest(f"input {i} must be an object with '{self.FIELD}' or 'path'", param=self.FIELD)
            value = r.get(self.FIELD, r.get("path"))
            if value is None:
                raise BadRequest(f"input {i}: '{self.FIELD}' is missing ({self.WHAT})", param=self.FIELD)
            values.append(value)
        return values

    def field_name(self, i: int, n: int) -> str:
        """How error messages name record i's value: `image`, or `image[3]` in a batch."""
        return f"{self.FIELD}[{i}]" if n > 1 else self.FIELD

    def predict(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        clf = self.need()
        return classification_result(clf.meta["classes"], self.values_proba(self.request_values(records), records))

    def evaluate(self, data: Any) -> dict[str, Any]:
        clf = self.need()
        if any(v is None for v in self.data_labels(data)):
            raise BadRequest(self.NO_LABELS)
        return classification_evaluation(clf.meta["classes"], self.data_proba(data), self.data_labels(data))

    def save(self, run_dir: Path) -> None:
        self.need().save(Path(run_dir), self.META)
