"""`luodi optimize --method onnx` for anomaly-detection (a mixin of AnomalyTask).

What goes into the graph: the autoencoder detector, from the preprocessed rows `input` (N, features; float32,
batch axis dynamic) to each row's reconstruction `error` (N,), the mean squared difference: the score the
detector's threshold was set on. What stays outside in numpy: the preprocessing (standardization, one-hot; its
statistics are data in anomaly.json), the threshold ratios and their combination, the isolation forest (arrays of
trees walked in numpy) and a hybrid's LightGBM / tabular classifier (optimize a tabular app for that one).

model.type isolation-forest (or model.options.detectors without autoencoder) has no neural model: the method
is refused naming that field.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from luodi import crypto
from luodi.atomic import atomic_path, write_json
from luodi.errors import ConfigError
from luodi.ort import SizedSession

META = "anomaly.json"
GRAPH = "autoencoder.onnx"
WEIGHTS = "autoencoder.safetensors"
INPUT, OUTPUT = "input", "error"


def export_autoencoder(ae: Any, n_features: int, path: Path) -> None:
    """The autoencoder and its per-row mean squared reconstruction error as one float32 graph at `path`."""
    import torch

    class Error(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ae = ae

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return ((self.ae(x) - x) ** 2).mean(1)

    ae.eval()
    sample = torch.zeros(2, n_features)
    with atomic_path(Path(path), suffix=".onnx") as tmp, torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shape checks that the dynamic batch axis makes general
        torch.onnx.export(Error().eval(), (sample,), str(tmp), input_names=[INPUT], output_names=[OUTPUT],
                          dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}}, opset_version=17, dynamo=False)


class OnnxAutoencoder:
    """The autoencoder detector of an optimized run: preprocessed rows -> reconstruction error, by ONNX Runtime."""

    def __init__(self, path: Path, threads: int | None = None):
        self.path = Path(path)
        self.session = SizedSession(self.path, threads)

    def error(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.zeros(0)
        return self.session.run([OUTPUT], {INPUT: np.asarray(x, np.float32)})[0].astype(np.float64)


class AnomalyOptimizing:
    """records_of / parameter_count / optimize of AnomalyTask (its state is declared there)."""

    optimize_methods: ClassVar[tuple[str, ...]] = ("onnx",)
    kind: str
    detectors: list[str]
    ae: Any
    iforest: Any
    clf: Any
    prep: Any
    opts: Any
    thresholds: dict[str, float]
    _ae_score: Callable[[pd.DataFrame], np.ndarray]

    def records_of(self, data: pd.DataFrame) -> list[dict[str, Any]]:
        """The prediction requests of a table: each row's feature columns."""
        return data[list(self.prep.features)].to_dict("records")

    def parameter_count(self) -> int:
        """The autoencoder's weights (its graph's, when ONNX), the forest's tree arrays and the classifier's."""
        from luodi.ort import parameter_count

        n = 0
        if isinstance(self.ae, OnnxAutoencoder):
            n += parameter_count(self.ae.path)
        elif self.ae is not None:
            n += sum(p.numel() for p in self.ae.parameters())
        if self.iforest is not None:
            n += sum(v.size for v in self.iforest.tensors().values())
        if self.clf is not None and hasattr(self.clf, "parameter_count"):
            n += int(self.clf.parameter_count() or 0)
        return int(n)

    def optimize(
        self, method: str, run_dir: Path, score: Callable[[], float], calibration: pd.DataFrame, opts: Any,
        say: Callable[[str], None],
    ) -> dict[str, Any]:
        """Replace the autoencoder of the run in run_dir (a copy of the base run) by its float32 graph, checked
        against PyTorch on the calibration rows (max |error difference|, agreement of the anomaly flags)."""
        if "autoencoder" not in self.detectors:
            field = "model.type" if self.kind == "isolation-forest" else "model.options.detectors"
            raise ConfigError(
                f"{field}: this app's detectors ({', '.join(self.detectors)}) hold no neural model, so --method "
                "onnx has nothing to export (the isolation forest runs as arrays in numpy); ONNX export is offered "
                "for model.type autoencoder, or hybrid with the autoencoder among model.options.detectors",
                param=field,
            )
        if method not in self.optimize_methods:
            raise ConfigError(f"--method {method} is not offered for anomaly-detection; offered: onnx",
                              param="method")
        if isinstance(self.ae, OnnxAutoencoder):
            raise ConfigError("this run already predicts with ONNX; optimize the run it was made from (--version)",
                              param="method")
        run_dir = Path(run_dir)
        x = self.prep.dense_matrix(calibration)
        reference = self._ae_score(calibration)
        export_autoencoder(self.ae, x.shape[1], run_dir / GRAPH)
        meta = crypto.read_json(run_dir / META)
        meta["ae_runtime"] = {"graph": GRAPH, "precision": "float32"}
        write_json(run_dir / META, meta)
        (run_dir / WEIGHTS).unlink(missing_ok=True)
        self.ae = OnnxAutoencoder(run_dir / GRAPH, opts.threads)
        errors = self.ae.error(x)
        threshold = max(meta["thresholds"]["autoencoder"], 1e-12)
        c = {
            "rows": len(x),
            "agreement": round(float(np.mean((reference >= threshold) == (errors >= threshold))), 5),
            "max_abs_diff": float(np.abs(reference - errors).max()) if len(x) else 0.0,
        }
        say(f"exported the autoencoder to ONNX ({GRAPH}, float32): flags agree with PyTorch {c['agreement']:.4f}, "
            f"max |reconstruction error difference| {c['max_abs_diff']:.2e}; preprocessing, the isolation forest "
            "and a hybrid's classifier stay outside the graph")
        return {"float32_vs_torch": c}

    def export_bundle(self, out: Path) -> dict[str, Any]:
        """Write a standalone bundle into `out`: model.onnx (the autoencoder and its reconstruction error),
        preprocess.json (the standardization and one-hot coding of Preprocessor.dense_matrix, the threshold, the
        labels) and predict.py (onnxruntime and numpy). Only the autoencoder detector has one: the isolation
        forest and a hybrid's classifier are refused naming the field that chose them."""
        import shutil

        from luodi.tasks import bundles

        others = [d for d in self.detectors if d != "autoencoder"] + (["a classifier"] if self.clf is not None else [])
        if others or self.ae is None:
            field = "model.type" if self.kind != "autoencoder" else "model.options.detectors"
            raise ConfigError(
                f"{field}: bundles are built for the autoencoder detector alone (model.type autoencoder); this app "
                f"scores with {', '.join(others)} too, which a bundle would not reproduce", param=field,
            )
        out, p = Path(out), self.prep
        if isinstance(self.ae, OnnxAutoencoder):
            (out / "model.onnx").write_bytes(crypto.read_bytes(self.ae.path))  # (plaintext: runs without luodi)
        else:
            export_autoencoder(self.ae, len(p.numeric) + sum(len(p.categories[c]) for c in p.categorical),
                               out / "model.onnx")
        write_json(out / "preprocess.json", {
            "numeric": {c: [c in set(p.log1p), p.medians[c], p.means[c], p.stds[c]] for c in p.numeric},
            "categories": {c: p.categories[c] for c in p.categorical},
            "threshold": max(self.thresholds["autoencoder"], 1e-12),
            "labels": [self.opts.normal, self.opts.attack_label],
        })
        shutil.copy2(Path(bundles.__file__).parent / "anomaly_predict.py", out / "predict.py")
        return {
            "inputs": "a CSV file (or CSV on stdin) whose first line names the columns; it needs the features "
            f"{', '.join(p.features)} (empty cells are missing values)",
            "outputs": "one JSON line per row: {label, is_anomaly, anomaly_score, scores}: anomaly_score >= 0.5 is "
            f"anomalous (label {self.opts.attack_label}); scores.autoencoder is the reconstruction error / threshold",
            "labels": 2,
            "requires": "onnxruntime numpy",
            "contents": "model.onnx (the autoencoder and its reconstruction error), preprocess.json (the "
            "standardization and one-hot coding, the threshold, the labels), predict.py",
            "example": "python predict.py rows.csv   (or: python predict.py < rows.csv)",
        }
