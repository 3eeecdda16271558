"""`luodi optimize --method distill` for tabular apps (a mixin of TabularTask): one MLP student learns the trained
ensemble's served probabilities (regression: its values) by temperature-scaled KL plus the hard-label loss, and
replaces every member, cross-fitted copy and calibrator of the run (Bucilua et al., "Model compression", 2006:
an ensemble into one network, with synthetic rows the ensemble labels).

What the student learns from: the probabilities the run serves, on the training split. Not the out-of-fold ones:
those are k single members, each on a fifth of the rows, a noisier function than the average the run serves,
and the student's job (and the agreement column of the trade-off table) is to reproduce the served function.
The served probabilities of a training row are in-sample for k-1 of the k cross-fitted copies, so they are a
little too sure there; the synthetic rows (`optimize.distill.mlp.augment`: training rows with values swapped
between rows, column by column, so every value stays one the column takes) are scored out of sample, and the
labels term pulls the student back to the truth on the real rows. Binary apps' teachers are calibrated, so the
student learns calibrated probabilities and the run needs no calibrator of its own.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from luodi.options.tabular import MEMBERS
from luodi.train import CHECKPOINT_DIR

MODEL_FILES = ("model.lgb*.txt", "mlp.safetensors", "forest.onnx", "svm.onnx", "ensemble.onnx")


def synthetic_rows(x: pd.DataFrame, n: int, swap: float, seed: int) -> pd.DataFrame:
    """n rows of x with each value swapped, with probability `swap`, for another random row's value of its
    column (values stay ones the column takes; missing values stay possible)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(len(x), size=n)
    out = {}
    for c in x.columns:
        col = x[c].to_numpy()
        vals = col[base]
        swapped = rng.random(n) < swap
        vals[swapped] = col[rng.integers(len(x), size=int(swapped.sum()))]
        out[c] = vals
    return pd.DataFrame(out)


class Distilling:
    """distill of TabularTask (its state is declared in TabularTask)."""

    def distill(self, run_dir: Path, train: pd.DataFrame, opts: Any, say: Callable[[str], None]) -> dict[str, Any]:
        """Train the student on the training split (and synthetic rows), then make run_dir (a copy of the base
        run) hold it alone: member folders, boosters, graphs and the calibrator are removed."""
        import torch

        d, s = opts.distill, opts.distill.mlp
        reg = self.objective == "regression"
        real = train.reset_index(drop=True)
        syn = synthetic_rows(real[self.prep.features], int(round(s.augment * len(real))), s.swap, d.seed)
        say(f"teacher: the served model's {'values' if reg else 'probabilities'} on {len(real)} training rows "
            f"and {len(syn)} synthetic rows")
        teacher = np.vstack([self.predict_proba(real), self.predict_proba(syn)]) if len(syn) else \
            self.predict_proba(real)
        frames = [self.encode_ordinal(real), self.encode_ordinal(syn)] if len(syn) else [self.encode_ordinal(real)]
        x = np.vstack([self._dense(f, "mlp") for f in frames]).astype(np.float32)
        y = self._target(real)
        labelled = np.r_[np.ones(len(real)), np.zeros(len(syn))].astype(np.float32)
        y_all = np.r_[y, np.zeros(len(syn), dtype=y.dtype)]
        if reg:
            labelled[: len(real)] *= ~np.isnan(y)
            mean, std = float(np.nanmean(y)), float(np.nanstd(y) or 1.0)
            target = (teacher[:, 0] - mean) / std
            y_all = np.nan_to_num((y_all - mean) / std)
        else:
            target = teacher
        say(f"student: an MLP {list(s.hidden)} on {x.shape[1]} inputs, {s.epochs} epochs, T={d.temperature}, "
            f"alpha={d.alpha}")
        torch.manual_seed(d.seed)
        from luodi.tasks.tabular.torch_state import make_mlp

        student = make_mlp(x.shape[1], 1 if reg else len(self.classes), list(s.hidden), 0.0)
        history = self._fit_student(student, (x, target, y_all, labelled), opts, Path(run_dir) / CHECKPOINT_DIR)
        student.eval()
        self._become_student(Path(run_dir), student, s.hidden, (mean, std) if reg else None, history)
        got = self.predict_proba(real)
        info: dict[str, Any] = {"student": {"hidden": list(s.hidden), "inputs": int(x.shape[1]),
                                            "parameters": int(sum(p.numel() for p in student.parameters()))},
                                "training_rows": len(real), "synthetic_rows": len(syn), "teacher": "served"}
        if reg:
            info["teacher_mae_train"] = float(np.mean(np.abs(got[:, 0] - teacher[: len(real), 0])))
        else:
            info["teacher_agreement_train"] = float(np.mean(got.argmax(1) == teacher[: len(real)].argmax(1)))
        return info

    def _fit_student(self, student: Any, arrays: tuple, opts: Any, ckpt: Path) -> list[dict[str, Any]]:
        """The shared torch loop over (x, teacher target, label, labelled?) with the distillation loss."""
        import torch
        import torch.nn.functional as F

        from luodi.tasks.tabular.torch_state import tensor_batches
        from luodi.train.torch_loop import LoopConfig, train_loop

        d, s = opts.distill, opts.distill.mlp
        t, alpha, reg = d.temperature, d.alpha, self.objective == "regression"
        x, target, y, lab = (torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)
        target = target.float() if reg else torch.log_softmax(torch.log(target.float().clamp_min(1e-7)) / t, 1)
        y = y.float() if reg else y.long()

        def step(model: Any, batch: tuple) -> Any:
            xb, tb, yb, lb = batch
            out = model(xb)
            if reg:
                out = out[:, 0]
                per_row = alpha * (out - tb) ** 2 + (1 - alpha) * lb * (out - yb) ** 2
            else:
                kl = F.kl_div(torch.log_softmax(out / t, 1), tb, log_target=True, reduction="none").sum(1)
                per_row = alpha * t * t * kl + (1 - alpha) * lb * F.cross_entropy(out, yb, reduction="none")
            return per_row.mean()

        cfg = LoopConfig(epochs=s.epochs, lr=s.lr, weight_decay=s.weight_decay, schedule="cosine", patience=None,
                         seed=d.seed, threads=self.opts.threads)
        res = train_loop(student, tensor_batches(x, target, y, lab, batch_size=s.batch_size), step, None,
                         ckpt / "student", cfg, progress=False)
        return [{**h, "stage": "distill"} for h in res.history]

    def _become_student(self, run_dir: Path, student: Any, hidden: list[int], scale: tuple[float, float] | None,
                        history: list[dict[str, Any]]) -> None:
        """The task holds the student alone (one MLP on the matrix its MLP read), saved into run_dir."""
        for folder in run_dir.glob("member*"):
            if folder.is_dir():
                shutil.rmtree(folder)
        for pattern in MODEL_FILES:
            for p in run_dir.glob(pattern):
                p.unlink()
        self.members, self.booster, self.more_boosters, self.linear, self.sk = [], None, [], None, {}
        self.mlp, self.kind, self.calibrator = student, "mlp", None
        self.weights = {m: 1.0 if m == "mlp" else 0.0 for m in MEMBERS}
        self.ensemble, self.onnx_info = None, None
        self._coder, self._mlp_layers, self._onnx_batch = None, None, None
        if scale is not None:
            self._ymean, self._ystd = scale
        self.opts = self.opts.model_copy(update={"hidden": list(hidden), "dropout": 0.0, "inner_folds": 0})
        self.history = history
        self.save(run_dir)
