"""A grid classifier's CNN as one ONNX graph, run with ONNX Runtime (an optimized image run, and export bundles).

The graph takes normalized pixels `input` (N, C, H, W; the batch axis dynamic) and gives the class
`probabilities` (softmax inside, so a bundle needs no more than the arithmetic of normalization). Batch norm is
folded into the convolutions by the exporter. Normalization (mean, std) and the paper-scan inversion stay outside,
as data in the classifier's JSON: the same graph and numbers are what `luodi export` ships.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from luodi import crypto
from luodi.atomic import atomic_path, write_json
from luodi.errors import BadRequest, NotFound
from luodi.ort import SizedSession
from luodi.tasks.file_classifier import label_targets
from luodi.tasks.grid_cnn import WEIGHTS, GridClassifier

GRAPH = "model.onnx"
INPUT, OUTPUT = "input", "probabilities"


class _Probabilities(nn.Module):
    """The CNN followed by softmax: the graph's output is what `GridClassifier.proba` returns."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.model(x), 1)


def export_grid(model: nn.Module, meta: dict[str, Any], path: Path) -> None:
    """Write the float32 graph of `model` (eval mode: batch norm folded, dropout off) to `path`."""
    model.eval()
    sample = torch.zeros(2, meta["channels"], *meta["size"])
    with atomic_path(Path(path), suffix=".onnx") as tmp, torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shape checks that the dynamic batch axis makes general
        torch.onnx.export(_Probabilities(model), (sample,), str(tmp), input_names=[INPUT], output_names=[OUTPUT],
                          dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}}, opset_version=17, dynamo=False)


class OnnxGrid:
    """`GridClassifier`'s inference side (meta, normalize, proba, targets, save) on an ONNX graph in run_dir.

    No gradients: explanations and robustness checks need the torch model of the run it was made from."""

    def __init__(self, run_dir: Path, meta: dict[str, Any], threads: int | None = None):
        self.meta = meta
        self.path = Path(run_dir) / meta["runtime"]["graph"]
        self.session = SizedSession(self.path, threads)

    def normalize(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, np.float32) - self.meta["mean"]) / self.meta["std"]).astype(np.float32)

    def proba(self, x: np.ndarray, batch: int = 256) -> np.ndarray:
        out = [self.session.run([OUTPUT], {INPUT: self.normalize(x[i : i + batch])})[0]
               for i in range(0, len(x), batch)]
        return np.concatenate(out) if out else np.zeros((0, len(self.meta["classes"])), np.float32)

    def targets(self, labels: list[Any], field: str = "label") -> torch.Tensor:
        return label_targets(self.meta["classes"], labels, field)

    def _no_gradients(self) -> BadRequest:
        precision = self.meta["runtime"]["precision"]
        return BadRequest(
            f"this run is an ONNX model ({precision}), which gives no gradients for explanations or attacks; "
            "use the torch run it was optimized from (--version)", param="version",
        )

    def pixel_model(self) -> nn.Module:
        raise self._no_gradients()

    def robust_accuracy(self, x: np.ndarray, y: torch.Tensor, adv: Any) -> float:
        raise self._no_gradients()

    def save(self, run_dir: Path, meta_file: str) -> None:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        if (run_dir / self.path.name).resolve() != self.path.resolve():
            shutil.copy2(self.path, run_dir / self.path.name)
        write_json(run_dir / meta_file, self.meta)


def load_grid(run_dir: Path, meta_file: str, threads: int | None = None) -> GridClassifier | OnnxGrid:
    """The classifier of a run: an ONNX graph where its JSON names one (an optimized run), else the torch CNN."""
    path = Path(run_dir) / meta_file
    meta = crypto.read_json(path) if path.exists() else {}
    if "runtime" not in meta:
        return GridClassifier.load(Path(run_dir), meta_file)
    if not (Path(run_dir) / meta["runtime"]["graph"]).exists():
        raise NotFound(f"no model graph in {run_dir} ({meta['runtime']['graph']} missing); optimize the app again")
    return OnnxGrid(Path(run_dir), meta, threads)


def to_onnx(clf: GridClassifier, run_dir: Path, meta_file: str, threads: int | None = None) -> OnnxGrid:
    """Replace the torch CNN of the run in run_dir by its float32 graph: the weights file goes, the JSON
    names the graph."""
    run_dir = Path(run_dir)
    export_grid(clf.model, clf.meta, run_dir / GRAPH)
    meta = {**clf.meta, "runtime": {"graph": GRAPH, "precision": "float32"}}
    write_json(run_dir / meta_file, meta)
    (run_dir / WEIGHTS).unlink(missing_ok=True)
    return OnnxGrid(run_dir, meta, threads)


def check(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """How closely two models' probabilities on the same rows match: top-1 agreement and max |difference|."""
    return {
        "rows": int(len(reference)),
        "agreement": round(float((reference.argmax(1) == candidate.argmax(1)).mean()), 5),
        "max_abs_diff": float(np.abs(reference - candidate).max()) if len(reference) else 0.0,
    }
