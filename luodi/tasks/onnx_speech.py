"""`luodi optimize --method onnx` for speech-recognition (a mixin of SpeechRecognitionTask).

What goes into the graph: the CNN ensemble (model.type cnn) from normalized log-mel grids `input` (N, 1, bands,
frames; the batch axis dynamic: every recording is fitted to the same frame count by the feature step) to the
mean of the members' softmax `probabilities`, which is exactly what `Ensemble.proba` returns. What stays outside
in numpy: decoding and resampling the audio, the log-mel / cepstral features (luodi.data.audio: an STFT and mel
filterbank with trimming and per-utterance normalization, whose options live in the classifier's JSON) and the
test-time speed copies (tta_speeds), which run the graph once per speed and average. The graph is read through
`luodi.tasks.onnx_image.OnnxGrid` (the same inference side as an optimized image run).

model.type speech-embedding has nothing to export: its network is already ONNX (openwakeword's two graphs) and
its head is a logistic regression in numpy, so the method is refused naming model.type.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from luodi.atomic import atomic_path, write_json
from luodi.errors import ConfigError
from luodi.tasks.grid_cnn import WEIGHTS
from luodi.tasks.onnx_image import GRAPH, INPUT, OUTPUT, OnnxGrid, check
from luodi.tasks.speech_models import Ensemble


class _MeanProbabilities(nn.Module):
    """The ensemble's served output: the mean of its members' softmax."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        self.models = nn.ModuleList(models)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([F.softmax(m(x), 1) for m in self.models]).mean(0)


def export_ensemble(ens: Ensemble, path: Path) -> None:
    """Write the float32 graph of the ensemble (eval mode) to `path`, batch axis dynamic."""
    models = [m.model.eval() for m in ens.members]
    sample = torch.zeros(2, ens.meta["channels"], *ens.meta["size"])
    with atomic_path(Path(path), suffix=".onnx") as tmp, torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shape checks that the dynamic batch axis makes general
        torch.onnx.export(_MeanProbabilities(models), (sample,), str(tmp), input_names=[INPUT],
                          output_names=[OUTPUT], dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                          opset_version=17, dynamo=False)


class SpeechOptimizing:
    """records_of / parameter_count / optimize of SpeechRecognitionTask (its state is declared there)."""

    optimize_methods: ClassVar[tuple[str, ...]] = ("onnx",)
    META: ClassVar[str]
    clf: Any
    kind: str
    sample_rate: int
    features: Callable[..., np.ndarray]
    need: Callable[[], Any]

    def records_of(self, data: Any) -> list[dict[str, Any]]:
        """The prediction requests of a labelled recording set: each one's samples and their rate."""
        return [{"audio": np.asarray(w, np.float32), "sample_rate": self.sample_rate} for w in data.waves]

    def parameter_count(self) -> int:
        """Weights the model computes with: the ONNX graph's initializers, the CNNs' or the regression head's."""
        from luodi.ort import parameter_count

        clf = self.need()
        if isinstance(clf, OnnxGrid):
            return parameter_count(clf.path)
        if isinstance(clf, Ensemble):
            return int(sum(p.numel() for m in clf.members for p in m.model.parameters()))
        return int(sum(t.size for t in clf.head.tensors("head").values()))

    def optimize(
        self, method: str, run_dir: Path, score: Callable[[], float], calibration: Any, opts: Any,
        say: Callable[[str], None],
    ) -> dict[str, Any]:
        """Replace the CNN ensemble of the run in run_dir (a copy of the base run) by one float32 graph, checked
        against PyTorch on the calibration recordings' features (agreement, max |probability difference|)."""
        run_dir = Path(run_dir)
        clf = self.need()
        if self.kind != "cnn":
            raise ConfigError(
                f"model.type {self.kind}: its speech network already runs in ONNX and its head is a logistic "
                "regression, so --method onnx has nothing to export; ONNX export is offered for model.type cnn",
                param="model.type",
            )
        if method not in self.optimize_methods:
            raise ConfigError(f"--method {method} is not offered for speech-recognition; offered: onnx",
                              param="method")
        if isinstance(clf, OnnxGrid):
            raise ConfigError("this run already predicts with ONNX; optimize the run it was made from (--version)",
                              param="method")
        x = self.features(list(calibration.waves))
        reference = clf.proba(x)
        export_ensemble(clf, run_dir / GRAPH)
        meta = {**clf.meta, "runtime": {"graph": GRAPH, "precision": "float32"}}
        write_json(run_dir / self.META, meta)
        (run_dir / WEIGHTS).unlink(missing_ok=True)
        self.clf = OnnxGrid(run_dir, meta, opts.threads)
        info = {"float32_vs_torch": check(reference, self.clf.proba(x))}
        c = info["float32_vs_torch"]
        say(f"exported the CNN ensemble ({len(clf.members)} member(s)) to ONNX ({GRAPH}, float32): agreement with "
            f"PyTorch {c['agreement']:.4f}, max |probability difference| {c['max_abs_diff']:.2e}; the log-mel "
            "features stay in numpy")
        return info
