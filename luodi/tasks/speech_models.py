"""The two speech classifiers: a logistic regression over pretrained speech embeddings, and an ensemble of
grid CNNs over log-mel spectrograms. Both expose meta, proba, targets, save and load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from luodi import crypto
from luodi.atomic import atomic_path, write_json
from luodi.errors import NotFound
from luodi.evaluate.calibration import apply_temperature, fit_temperature
from luodi.tasks.file_classifier import label_targets
from luodi.tasks.grid_cnn import WEIGHTS, GridClassifier
from luodi.tasks.linear_heads import LinearHead, fit_logreg
from luodi.train.torch_loop import load_weights, save_weights

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
        from safetensors.numpy import load

        if not (run_dir / HEAD_FILE).exists():
            raise NotFound(f"no trained model in {run_dir} ({HEAD_FILE} missing); train the app first")
        t = load(crypto.read_bytes(run_dir / HEAD_FILE))
        return cls(meta, LinearHead.from_tensors(t, "head"), t["mean"], t["std"])


class MeanLogits(nn.Module):
    """The mean of several models' logits."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        self.models = nn.ModuleList(models)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.models]).mean(0)


class Ensemble:
    """Several GridClassifiers trained with different seeds; probabilities are averaged."""

    def __init__(self, members: list[GridClassifier]):
        self.members = members
        self.meta = {**members[0].meta, "ensemble": len(members)}

    def targets(self, labels: list[Any], field: str = "label") -> torch.Tensor:
        return self.members[0].targets(labels, field)

    def proba(self, x: np.ndarray) -> np.ndarray:
        return np.mean([m.proba(x) for m in self.members], axis=0)

    def logit_model(self) -> nn.Module:
        """The members' mean logits from the model's input (what explanations attribute: a mean of logits is
        differentiable and additive, while the served mean of probabilities is not a logit)."""
        return MeanLogits([m.pixel_model() for m in self.members])

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
        path = run_dir / meta_file
        if not path.exists() or not (run_dir / WEIGHTS).exists():
            raise NotFound(
                f"no trained model in {run_dir} ({meta_file} or {WEIGHTS} missing); train the app first"
            )
        meta = crypto.read_json(path)
        ens = cls([GridClassifier(meta) for _ in range(int(meta.get("ensemble", 1)))])
        load_weights(ens.modules(), run_dir / WEIGHTS)
        ens.modules().eval()
        return ens
