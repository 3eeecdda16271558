"""Exact attributions where the model allows them: TreeSHAP for LightGBM boosters, integrated gradients for
differentiable (torch) models.

TreeSHAP: LightGBM's own `pred_contrib` (for one record its single-row fast path) is the TreeSHAP algorithm
of Lundberg et al. (path-dependent, the same numbers shap's TreeExplainer gives for a booster;
tests/test_explain.py checks it) at a fraction of the cost, so a single record explains in well under a
millisecond. Its values add up to the booster's margin (raw
score); `probability_shap` turns them into the probability units the tabular task predicts in.

Integrated gradients (Captum): attributions of a differentiable model's logit to its inputs (pixels, token
embeddings) along the straight path from a baseline; their sum should equal logit(x) - logit(baseline)
(completeness), and `completeness_error` says by how much it does not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


class _RowContrib:
    """LightGBM's single-row fast path (LGBM_BoosterPredictForMatSingleRowFast, predict type "contrib") for one
    booster: the same TreeSHAP numbers as Booster.predict(pred_contrib=True), without its per-call Python work
    (a predictor object, parameter copies, array checks), which costs about a quarter of a small booster's
    TreeSHAP on one record. A lock guards the fast config's buffers (it is not safe for concurrent calls)."""

    PREDICT_CONTRIB, FLOAT64 = 3, 1

    def __init__(self, booster: Any, n_features: int, threads: int):
        import ctypes
        import threading
        import weakref

        from lightgbm.basic import _LIB, _c_str, _safe_call

        self.lib, self.ctypes, self.n_features = _LIB, ctypes, n_features
        self.handle = ctypes.c_void_p()
        _safe_call(_LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
            booster._handle, ctypes.c_int(self.PREDICT_CONTRIB), ctypes.c_int(0), ctypes.c_int(-1),
            ctypes.c_int(self.FLOAT64), ctypes.c_int32(n_features), _c_str(f"num_threads={threads}"),
            ctypes.byref(self.handle)))
        self.lock = threading.Lock()
        self.out_len = ctypes.c_int64(0)
        weakref.finalize(self, _LIB.LGBM_FastConfigFree, self.handle)

    def __call__(self, row: np.ndarray, width: int) -> np.ndarray:
        ct = self.ctypes
        row = np.ascontiguousarray(row, dtype=np.float64)
        out = np.empty(width, dtype=np.float64)
        with self.lock:
            rc = self.lib.LGBM_BoosterPredictForMatSingleRowFast(
                self.handle, row.ctypes.data_as(ct.c_void_p), ct.byref(self.out_len),
                out.ctypes.data_as(ct.POINTER(ct.c_double)))
            if rc != 0 or self.out_len.value != width:
                raise RuntimeError("LightGBM's single-row contrib call failed")
        return out


_FAST: Any = None  # booster -> its _RowContrib (or False where it could not be built), weakly keyed


def _row_contrib(booster: Any, n_features: int, threads: int) -> _RowContrib | None:
    global _FAST
    import weakref

    if _FAST is None:
        _FAST = weakref.WeakKeyDictionary()
    fast = _FAST.get(booster)
    if fast is None:
        try:
            fast = _RowContrib(booster, n_features, threads)
        except Exception:  # a LightGBM without the fast single-row API: Booster.predict
            fast = False
        _FAST[booster] = fast
    return fast or None


def lgb_shap(booster: Any, x: np.ndarray, n_classes: int, threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """TreeSHAP of one LightGBM booster in margin space: (phi (n, k, f), base (n, k)), k = 1 for a binary or
    regression booster, k = classes for a multi-class one; phi.sum(-1) + base is the raw score. One record
    takes LightGBM's single-row fast path (same numbers)."""
    k = n_classes if n_classes > 2 else 1
    fast = _row_contrib(booster, x.shape[1], threads) if len(x) == 1 else None
    if fast is not None:
        c = fast(x[0], k * (x.shape[1] + 1))
    else:
        c = np.asarray(booster.predict(x, pred_contrib=True, num_threads=threads), dtype=np.float64)
    c = c.reshape(len(x), k, -1)
    return c[..., :-1], c[..., -1]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _chord(phi: np.ndarray, gap: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """phi rescaled so that it sums to `gap` (the change in probability) instead of the margin change; where
    the margin hardly moved, the link's local slope scales it."""
    total = phi.sum(-1)
    safe = np.abs(total) > 1e-9
    scale = np.where(safe, gap / np.where(safe, total, 1.0), slope)
    return phi * scale[..., None]


def probability_shap(
    boosters: Sequence[Any], x: np.ndarray, objective: str, n_classes: int, threads: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """SHAP values of the boosters' averaged prediction, in the units the tabular task predicts in:
    (effects (n, K, f), base (n, K)), K = classes (1 for regression); effects.sum(-1) + base is the average
    of the boosters' probabilities (values).

    Each booster's margin SHAP values are scaled onto its probability (the chord of the sigmoid / softmax
    between the base margin and the record's margin; exact for the sum, and the ranking of features is kept),
    then averaged like the boosters' predictions are."""
    effects, bases = [], []
    for b in boosters:
        phi, base = lgb_shap(b, x, n_classes, threads)
        if objective == "regression":
            effects.append(phi)
            bases.append(base)
            continue
        z = base + phi.sum(-1)
        if objective == "binary":
            p, p0 = _sigmoid(z[:, 0]), _sigmoid(base[:, 0])
            pos = _chord(phi[:, 0], p - p0, p * (1 - p))
            effects.append(np.stack([-pos, pos], 1))
            bases.append(np.stack([1 - p0, p0], 1))
        else:
            p, p0 = _softmax(z), _softmax(base)
            effects.append(_chord(phi, p - p0, p * (1 - p)))
            bases.append(p0)
    return np.mean(effects, axis=0), np.mean(bases, axis=0)


def integrated_gradients(
    forward: Callable[..., Any],
    inputs: Any,
    baselines: Any,
    target: Any,
    steps: int = 32,
    additional_forward_args: Any = None,
    layer: Any = None,
    internal_batch_size: int | None = None,
) -> tuple[Any, np.ndarray]:
    """Captum integrated gradients of `forward`'s output `target` (a logit) with respect to `inputs` (or to
    `layer`'s output, e.g. a token embedding layer: then `inputs` / `baselines` are that model's inputs) with
    `steps` Gauss-Legendre points (`internal_batch_size`: at most that many interpolated inputs per pass):
    (attributions, completeness error per example)."""
    from captum.attr import IntegratedGradients, LayerIntegratedGradients

    ig = IntegratedGradients(forward) if layer is None else LayerIntegratedGradients(forward, layer)
    attr, delta = ig.attribute(
        inputs,
        baselines=baselines,
        target=target,
        n_steps=steps,
        method="gausslegendre",
        additional_forward_args=additional_forward_args,
        internal_batch_size=internal_batch_size,
        return_convergence_delta=True,
    )
    return attr, completeness_error(attr, delta, forward, inputs, target, additional_forward_args)


def completeness_error(
    attr: Any, delta: Any, forward: Callable[..., Any], inputs: Any, target: Any, extra: Any
) -> np.ndarray:
    """|sum of attributions - (logit(x) - logit(baseline))| / |logit(x)| per example (Captum's convergence
    delta, relative to the logit)."""
    import torch

    with torch.no_grad():
        args = (inputs,) if extra is None else (inputs, *(extra if isinstance(extra, tuple) else (extra,)))
        out = forward(*args)
        idx = torch.as_tensor(target).reshape(-1, 1).expand(len(out), 1) if out.dim() > 1 else None
        logit = out.gather(1, idx).squeeze(1) if idx is not None else out
    return (delta.abs() / logit.abs().clamp_min(1e-12)).detach().cpu().numpy()


def image_attributions(
    model: Any,
    images: Any,
    target: Any,
    steps: int = 32,
    baseline: float | Any = 0.0,
    internal_batch_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Integrated gradients of a torch image classifier's logit `target` over its pixels ((n, c, h, w) float
    input, already normalized as the model reads it), from a constant `baseline` image (default: 0, the
    normalized black image is the caller's to pass): (attributions shaped like the images, completeness error
    per image)."""
    import torch

    model.eval()
    x = torch.as_tensor(images, dtype=torch.float32)
    base = baseline if torch.is_tensor(baseline) else torch.full_like(x, float(baseline))
    attr, err = integrated_gradients(
        model, x, base, torch.as_tensor(target), steps, internal_batch_size=internal_batch_size
    )
    return attr.detach().cpu().numpy(), err


# --- compact summaries of pixel / frame attributions (what the explain answers and the console show) -------


def sig(v: float, digits: int = 4) -> float:
    """`v` rounded to `digits` significant digits (keeps explain answers small)."""
    return float(f"{float(v):.{digits}g}")


def grid_attributions(
    model: Any,
    x: np.ndarray,
    target: np.ndarray,
    steps: int = 32,
    goal: float = 0.01,
    max_steps: int = 512,
    chunk: int = 8,
) -> dict[str, np.ndarray]:
    """Integrated gradients of a grid model (images, spectrograms: (n, c, h, w) as the model reads them) from
    the all-zero input (a black image; silence in a normalized spectrogram): attributions, completeness
    errors, the steps each input used, and the explained logit at the input and at the baseline.

    A ReLU / max-pool CNN is piecewise linear, so the path integral has kinks that a fixed quadrature misses:
    on a small digits CNN 32 steps leave a median error of 1.8 % (p95 6 %), while 512 reach 0.1 %. Each input
    starts at `steps`; those whose error is above `goal` are redone with four times as many, up to
    `max_steps` (the easy ones stay cheap). `chunk` inputs go through Captum together, in batches of at most
    256 interpolated inputs."""
    import torch

    model.eval()
    attr = np.zeros(x.shape, np.float32)
    err, used = np.zeros(len(x)), np.zeros(len(x), dtype=int)
    todo, s = np.arange(len(x)), steps
    while len(todo):
        for i in range(0, len(todo), chunk):
            idx = todo[i : i + chunk]
            attr[idx], err[idx] = image_attributions(model, x[idx], target[idx], s, 0.0, internal_batch_size=256)
            used[idx] = s
        if s >= max_steps:
            break
        todo, s = todo[err[todo] > goal], min(s * 4, max_steps)
    xt = torch.as_tensor(x, dtype=torch.float32)
    idx = torch.as_tensor(target, dtype=torch.long).reshape(-1, 1)
    with torch.no_grad():
        logit = model(xt).gather(1, idx)[:, 0].numpy() if len(x) else np.zeros(0)
        base = model(torch.zeros_like(xt)).gather(1, idx)[:, 0].numpy() if len(x) else np.zeros(0)
    return {"attr": attr, "error": err, "steps": used, "logit": logit, "base": base}


def pixel_summary(attr: np.ndarray, top: int = 5, cells: int = 7) -> dict[str, Any]:
    """One image's attributions (c, h, w) summed over channels and into a coarse grid of `cells` x `cells`
    blocks (the image's own pixels when a side has at most 8): the grid (rows of block sums, which add up
    to the total attribution) and the `top` blocks by |effect|, each with its box as fractions of the image
    (x0, y0, x1, y1: left, top, right, bottom)."""
    heat = attr.sum(0)
    h, w = heat.shape
    rows = np.array_split(np.arange(h), h if h <= 8 else cells)
    cols = np.array_split(np.arange(w), w if w <= 8 else cells)
    grid = np.array([[heat[np.ix_(r, c)].sum() for c in cols] for r in rows])
    regions = []
    for k in np.argsort(-np.abs(grid), axis=None)[: max(0, top)]:
        i, j = divmod(int(k), grid.shape[1])
        box = [int(cols[j][0]) / w, int(rows[i][0]) / h, (int(cols[j][-1]) + 1) / w, (int(rows[i][-1]) + 1) / h]
        regions.append({"row": i, "col": j, "box": [round(b, 4) for b in box], "effect": sig(grid[i, j])})
    return {"input_size": [h, w], "grid": [[sig(v) for v in row] for row in grid], "regions": regions}


def frame_summary(attr: np.ndarray, times: np.ndarray, frame_seconds: float, top: int = 3) -> dict[str, Any]:
    """One spectrogram's attributions (c, bands, frames) summed over channels and bands into one effect per
    frame (time column), the frames that hold the recording (`times`: each frame's centre in seconds of the
    request's audio, NaN for padding, whose effect is 0 as it equals the baseline) with their effect, and the
    `top` segments: maximal runs of frames pushing the same way, by |summed effect|."""
    per_frame = attr.sum((0, 1))
    keep = np.isfinite(times)
    t, e = times[keep], per_frame[keep]
    segments, start = [], 0
    sign = np.sign(e)
    for k in range(1, len(e) + 1):
        if k == len(e) or sign[k] != sign[start]:
            if sign[start] != 0:
                segments.append(
                    {
                        "start": round(max(0.0, float(t[start]) - frame_seconds / 2), 3),
                        "end": round(float(t[k - 1]) + frame_seconds / 2, 3),
                        "effect": sig(e[start:k].sum()),
                    }
                )
            start = k
    segments.sort(key=lambda s: -abs(s["effect"]))
    return {
        "frame_seconds": round(float(frame_seconds), 5),
        "time": [round(float(v), 3) for v in t],
        "effect": [sig(v) for v in e],
        "segments": segments[: max(0, top)],
    }
