"""Which moments of a recording made a speech CNN choose its word: integrated gradients over its frames.

The CNN reads a normalized log-mel spectrogram (bands x frames, luodi.data.audio.utterance_features): per-band
mean removed, so the all-zero spectrogram is silence, and it is also what padding holds. Captum's integrated
gradients (luodi.evaluate.attributions) attribute the predicted class's logit (an ensemble's mean logit) to
every cell from that baseline; the cells of a frame are summed into its effect, and each frame is placed at
its time in the request's audio (silence trimming, padding or time stretching undone). Padding frames equal
the baseline, so their effect is exactly 0 and they are left out.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from luodi.data.audio import log_mel, trim_silence

STEPS = 32


def frame_times(task: Any, wave: np.ndarray) -> tuple[np.ndarray, float]:
    """Each CNN frame's centre in seconds of `wave` (NaN for padding) and the seconds one CNN frame spans,
    following utterance_features: the log-mel's frames, silence trimming, then `pad` (centred) or `resize`."""
    hop = task.hop_ms / 1000
    m = log_mel(wave, task.sample_rate, task.n_mels, hop_ms=task.hop_ms)
    kept = trim_silence(m, task.feature_options["trim_db"])
    t, frames = kept.shape[1], task.frames
    lo = next((j for j in range(m.shape[1] - t + 1) if np.array_equal(m[:, j : j + t], kept)), 0)
    if task.feature_options["fit"] == "resize":  # linear interpolation with aligned corners
        pos = np.linspace(0, t - 1, frames) if frames > 1 else np.zeros(1)
        return (lo + pos) * hop, hop * max(t - 1, 1) / max(frames - 1, 1)
    if t >= frames:  # centre crop
        pos = np.arange(frames, dtype=float) + (t - frames) // 2
    else:  # centred zero padding
        pos = np.arange(frames, dtype=float) - (frames - t) // 2
        pos[(pos < 0) | (pos >= t)] = np.nan
    return (lo + pos) * hop, hop


def attribute_waves(task: Any, waves: list[np.ndarray], steps: int = STEPS) -> dict[str, Any]:
    """Class probabilities (as predict serves them), the CNN input, the predicted classes and their
    integrated-gradients attributions (luodi.evaluate.attributions.grid_attributions), with frame times."""
    from luodi.evaluate.attributions import grid_attributions

    clf = task.need()
    proba = task.proba(waves)
    x = task.features(waves)
    target = proba.argmax(1)
    ig = grid_attributions(clf.logit_model(), x, target, steps)
    times = [frame_times(task, w) for w in waves]
    return {"proba": proba, "x": x, "target": target, **ig, "times": times}


def explain_waves(task: Any, waves: list[np.ndarray], top: int = 3, steps: int = STEPS) -> list[dict[str, Any]]:
    """Predictions of a speech CNN app with an `explanation` each: the effect of every frame on the predicted
    word's logit (time in seconds) and the `top` segments (see the module docstring)."""
    from luodi.evaluate.attributions import frame_summary, sig
    from luodi.tasks.file_classifier import classification_result

    a = attribute_waves(task, waves, steps)
    classes = task.need().meta["classes"]
    n = len(getattr(task.need(), "members", [None]))
    over = f" over {n} CNNs (their mean)" if n > 1 else ""
    tta = "; at speed 1 (the served probabilities also average tta_speeds)" if task.tta_speeds else ""
    outs = [{"text": str(o["label"]), **o} for o in classification_result(classes, a["proba"])]
    return [
        {
            **out,
            "explanation": {
                "target": f"logit of '{classes[t]}'{over}{tta}",
                "method": "integrated-gradients",
                "steps": int(a["steps"][i]),
                "baseline": "silence (the all-zero normalized log-mel)",
                "base": sig(a["base"][i]),
                "completeness_error": sig(a["error"][i]),
                **frame_summary(a["attr"][i], *a["times"][i], top),
            },
        }
        for i, (t, out) in enumerate(zip(a["target"], outs, strict=True))
    ]
