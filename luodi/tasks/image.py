"""image-classification: a small CNN with on-the-fly augmentation (luodi.tasks.grid_cnn).

App keys used: data.format (idx | image-folder | sklearn:digits), data.options.images/labels (IDX names),
data.split {valid: fraction or count, seed, stratify, shuffle: false = hold out the last part},
model.options (luodi.options.image.ImageClassificationOptions: width, dropout, size, channels, ...),
train {epochs, lr, batch_size, early_stopping, seed, class_weights, resample, max_minutes, augment: {rotate,
shift, scale, scale_x, scale_y, flip, noise, time_mask, freq_mask}}.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, Field

from luodi import crypto
from luodi.atomic import write_json
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
from luodi.tasks.onnx_image import OnnxGrid, load_grid

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
    optimize_methods: ClassVar[tuple[str, ...]] = ("onnx", "int8", "fp16", "prune")

    def __init__(self, config: AppConfig):
        super().__init__(config)
        self.opts: ImageClassificationOptions = model_options(config)
        self.clf: GridClassifier | OnnxGrid | None = None

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
        clf = self.need()
        if adv is not None and isinstance(clf, GridClassifier):  # an ONNX run has no gradients to attack with
            out["robust_accuracy"] = clf.robust_accuracy(self.model_input(data), clf.targets(data.y, "labels"), adv)
        return out

    def load(self, run_dir: Path) -> None:
        self.clf = load_grid(Path(run_dir), self.META)

    # optimization (luodi optimize) and export (luodi export)
    def records_of(self, data: ImageSet) -> list[dict[str, Any]]:
        """The prediction requests of a labelled image set: each image's pixel array."""
        return [{"image": img} for img in data.x]

    def parameter_count(self) -> int:
        """Weights the model computes with: the ONNX graph's initializers or the torch CNN's parameters."""
        from luodi.ort import parameter_count

        clf = self.need()
        if isinstance(clf, OnnxGrid):
            return parameter_count(clf.path)
        return int(sum(p.numel() for p in clf.model.parameters()))

    def optimize(
        self, method: str, run_dir: Path, score: Callable[[], float], calibration: ImageSet, opts: Any,
        say: Callable[[str], None],
    ) -> dict[str, Any]:
        """Turn the CNN of the run in run_dir (a copy of the base run) into ONNX: `onnx` float32, or `int8`
        (static QDQ, per-channel, calibrated on the calibration rows; float32 kept where the quality drop
        exceeds opts.max_quality_drop, or where int8 is not faster at batch 1 with opts.require_faster).
        Each graph is checked against the model it replaces on the calibration rows (agreement, max |dp|)."""
        from luodi.tasks import onnx_image

        run_dir = Path(run_dir)
        clf = self.need()
        self._exportable()
        x = self.model_input(calibration)
        info: dict[str, Any] = {}
        reference = None  # the torch probabilities, where this run still has the torch CNN
        if isinstance(clf, GridClassifier):
            reference = clf.proba(x)
            clf = self.clf = onnx_image.to_onnx(clf, run_dir, self.META, opts.threads)
            info["float32_vs_torch"] = onnx_image.check(reference, clf.proba(x))
            c = info["float32_vs_torch"]
            say(f"exported the CNN to ONNX ({onnx_image.GRAPH}, float32): agreement with PyTorch "
                f"{c['agreement']:.4f}, max |probability difference| {c['max_abs_diff']:.2e}")
        if method == "onnx":
            return info
        if method == "fp16":
            return self._fp16(run_dir, clf, x, say, info)
        return self._int8(run_dir, clf, x, reference, score, opts, say, info)

    def prune(self, run_dir: Path, train: ImageSet, opts: Any, say: Callable[[str], None]) -> dict[str, Any]:
        """Remove whole conv channels (and dense hidden units) of the CNN, then recover it on the unpruned
        model's predictions and the labels (optimize.prune; luodi.tasks.image_prune). The pruned widths are
        stored in the run's JSON and rebuilt at load; onnx / int8 compose on top (--version)."""
        from luodi.tasks.image_prune import prune_run

        return prune_run(self, Path(run_dir), train, opts.prune, say)

    def _fp16(self, run_dir: Path, fp32: OnnxGrid, x: np.ndarray, say: Callable[[str], None],
              info: dict[str, Any]) -> dict[str, Any]:
        """float16 weights and activations (inputs and outputs float32): half the file; on CPUs usually slower."""
        from luodi.ort import to_float16
        from luodi.tasks import onnx_image

        precision = fp32.meta["runtime"]["precision"]
        if precision != "float32":
            raise ConfigError(f"--method fp16 starts from a float32 model; this run is already {precision}: "
                              "optimize its base version instead (--version)", param="method")
        target = run_dir / "model-fp16.onnx"
        to_float16(fp32.path, target)
        meta = {**fp32.meta, "runtime": {"graph": target.name, "precision": "float16"}}
        half = OnnxGrid(run_dir, meta)
        info["float16_vs_float32"] = onnx_image.check(fp32.proba(x), half.proba(x))
        fp32.path.unlink()
        write_json(run_dir / self.META, meta)
        self.clf = half
        say(f"float16: agreement with float32 {info['float16_vs_float32']['agreement']:.4f}")
        return info

    def _int8(self, run_dir: Path, fp32: OnnxGrid, x: np.ndarray, reference: np.ndarray | None,
              score: Callable[[], float], opts: Any, say: Callable[[str], None], info: dict[str, Any]) -> dict:
        """Static int8 of the float32 graph `fp32`; first with every Conv / Gemm in int8, then with the first and
        last of them in float32 (the layers most sensitive to quantization), then float32 as it was."""
        from luodi.ort_static import batch1_ms, quantizable_nodes, quantize_static_int8
        from luodi.tasks import onnx_image

        meta = fp32.meta
        precision = meta["runtime"]["precision"]
        if precision != "float32":
            raise ConfigError(
                f"--method int8 starts from a float32 model; this run is already {precision}: "
                "optimize its base version instead (--version)", param="method",
            )
        target = run_dir / "model-int8.onnx"
        normalized = fp32.normalize(x)
        base = score()
        nodes = quantizable_nodes(fp32.path, ("Conv", "Gemm", "MatMul"))
        attempts = [[], sorted({nodes[0], nodes[-1]})] if len(nodes) > 2 else [[]]
        int8_meta = {**meta, "runtime": {"graph": target.name, "precision": "int8"}}
        candidate, drop = None, 0.0
        for exclude in attempts:
            quantize_static_int8(fp32.path, target, onnx_image.INPUT, normalized, exclude)
            self.clf = candidate = OnnxGrid(run_dir, int8_meta, opts.threads)
            drop = base - score()
            where = f"float32 for {', '.join(exclude)}" if exclude else "int8 everywhere"
            say(f"{where}: quality drop {drop:.4f} (bound {opts.max_quality_drop})")
            if drop <= opts.max_quality_drop:
                info["float32_nodes"] = exclude
                break
        info["quality_drop"] = round(float(drop), 6)
        info["met"] = bool(drop <= opts.max_quality_drop)
        if not info["met"]:
            return self._keep_float32(fp32, target, info, say,
                                      f"int8 quality drop {drop:.4f} above the bound {opts.max_quality_drop}")
        probs = candidate.proba(x)
        info["int8_vs_float32"] = onnx_image.check(fp32.proba(x), probs)
        if reference is not None:
            info["int8_vs_torch"] = onnx_image.check(reference, probs)
        ms32 = batch1_ms(fp32.session, onnx_image.INPUT, normalized)
        ms8 = batch1_ms(candidate.session, onnx_image.INPUT, normalized)
        info["batch1_ms"] = {"float32": round(ms32, 3), "int8": round(ms8, 3)}
        if opts.require_faster and ms8 >= ms32:
            return self._keep_float32(fp32, target, info, say,
                                      f"int8 measured slower at batch 1 ({ms8:.3f} ms vs {ms32:.3f} ms float32)")
        fp32.path.unlink()
        write_json(run_dir / self.META, int8_meta)
        say(f"int8: {ms8:.3f} ms vs {ms32:.3f} ms float32 at batch 1")
        return info

    def _keep_float32(self, fp32: OnnxGrid, target: Path, info: dict[str, Any], say: Callable[[str], None],
                      why: str) -> dict[str, Any]:
        """Leave the run on its float32 graph and say why int8 was not kept."""
        target.unlink(missing_ok=True)
        self.clf = fp32
        info["kept"] = f"float32 ({why})"
        say(f"{why}: float32 kept")
        return info

    def _exportable(self) -> None:
        if isinstance(self.clf, GridClassifier) and self.clf.meta.get("arch") == "scatter":
            raise ConfigError("model.options.arch scatter: the wavelet scattering (kymatio, FFT-based) has no ONNX "
                              "export; optimize or export a cnn, flat or madry model", param="model.options.arch")

    def export_bundle(self, out: Path) -> dict[str, Any]:
        """Write a standalone bundle into `out`: model.onnx (the CNN, softmax included), labels.json (labels,
        image size and channels, normalization, the background level for paper scans) and predict.py
        (onnxruntime, numpy and Pillow only, as luodi reads image files with Pillow)."""
        import shutil

        from luodi.tasks import bundles
        from luodi.tasks.onnx_image import GRAPH, export_grid

        clf = self.need()
        self._exportable()
        out = Path(out)
        if isinstance(clf, OnnxGrid):
            (out / GRAPH).write_bytes(crypto.read_bytes(clf.path))  # (plaintext: a bundle runs without luodi)
        else:
            export_grid(clf.model, clf.meta, out / GRAPH)
        m = clf.meta
        write_json(out / "labels.json", {
            "labels": m["classes"], "channels": m["channels"], "size": m["size"], "mean": m["mean"],
            "std": m["std"], "background": m["background"] if m["channels"] == 1 else None,
        })
        shutil.copy2(Path(bundles.__file__).parent / "image_predict.py", out / "predict.py")
        return {
            "inputs": f"image files (png/jpg; {m['channels']} channel(s), resized to {m['size'][0]}x{m['size'][1]})",
            "outputs": "{label, score}: the predicted label and its probability",
            "example": "python predict.py digit.png ...   (or one image path per line on stdin)",
            "requires": "onnxruntime numpy pillow",
            "contents": "model.onnx (the model), labels.json (labels, image size, normalization), predict.py",
            "labels": len(m["classes"]),
        }

    def input_model(self) -> type[BaseModel]:
        return ImageInput

    def output_model(self) -> type[BaseModel]:
        return ImageOutput


def border_mean(x: np.ndarray) -> float:
    """Mean of the one-pixel frame of (N, C, H, W) images: the background level."""
    frame = np.concatenate([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], axis=-1)
    return float(frame.mean())
