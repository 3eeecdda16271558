"""The explanations part of the audit: global importance (a table and a bar plot) and a few example
attributions, from the same `explain` the app serves.

- Table apps (tabular, anomaly-detection): each feature's mean |effect| over validation rows: exact TreeSHAP
  for LightGBM members, ablation for the others (luodi.tasks.tabular.explaining); three example predictions.
- Text classification: integrated gradients over tokens (luodi.tasks.token_attributions): the words with the
  largest mean |effect|, example texts, and the completeness error (goal: <= 1 % of the logit for >= 95 % of
  the texts at 32 steps).
- Image classification: integrated gradients over pixels (luodi.evaluate.attributions.image_attributions):
  heat maps of example images and the mean |attribution| map.
- Speech recognition (CNN apps): integrated gradients over the log-mel frames from silence
  (luodi.tasks.speech_explain): each frame's effect drawn over the spectrogram of three validation clips, and
  the share of 20 clips with completeness error <= 1 %; speech-embedding apps (ONNX, no gradients): skipped.
- Other tasks: skipped, saying why.
"""

from __future__ import annotations

import html as html_lib
from typing import Any

import numpy as np

from luodi.audit.section import Section, figure_html, table_html
from luodi.errors import BadRequest
from luodi.evaluate.explain import global_importance

TITLE = "Explanations"
TABLE_TASKS = ("tabular", "anomaly-detection")
COMPLETENESS_GOAL = 0.01  # relative to the logit
COMPLETENESS_SHARE = 0.95  # of the examples


def section(
    pred: Any, train: Any, valid: Any, *, explain_rows: int = 200, explain_texts: int = 40, **_: Any
) -> Section:
    """Global importance and example attributions of the app behind `pred` (a Predictor: .task) on `valid`."""
    task = pred.task
    if task.name in TABLE_TASKS:
        return table_section(task, valid, explain_rows)
    if task.name == "text-classification":
        return text_section(task, valid, explain_texts)
    if task.name == "image-classification":
        return image_section(task, valid)
    if task.name == "speech-recognition":
        return speech_section(task, valid)
    return Section(TITLE, status="skipped", note=f"task {task.name} has no attributions here")


def _bars(rows: list[dict[str, Any]], key: str, xlabel: str, alt: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = rows[:15][::-1]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(rows) + 1))
    ax.barh([str(r[key]) for r in rows], [r["mean_abs_effect"] for r in rows], color="#4a78b5")
    ax.set_xlabel(xlabel)
    return figure_html(fig, alt)


# --- tables ------------------------------------------------------------------------------------------------


def table_numbers(task: Any, valid: Any, max_rows: int = 200) -> dict[str, Any]:
    """Global importance (mean |effect| on the predicted label's probability) and three examples."""
    frame = valid.sample(max_rows, random_state=0) if len(valid) > max_rows else valid
    records = frame[list(task.prep.features)].to_dict(orient="records")
    explained = task.explain(records)
    first = explained[0]["explanation"] if explained else {}
    examples = [
        {
            "prediction": out.get("label", out.get("value")),
            **out["explanation"],
            "effects": out["explanation"]["effects"][:5],
        }
        for out in explained[:3]
    ]
    return {
        "method": first.get("method", "ablation"),
        "target": "value" if first.get("target") == "value" else "predicted label's probability",
        "rows": len(records),
        "importance": global_importance(explained)[:20],
        "examples": examples,
    }


def table_section(task: Any, valid: Any, max_rows: int = 200) -> Section:
    n = table_numbers(task, valid, max_rows)
    how = {"shap": "exact TreeSHAP", "shap+ablation": "TreeSHAP (LightGBM) + ablation (other members)"}
    note = (
        f"mean |effect| on the {n['target'] or 'prediction'} over {n['rows']} validation rows, by "
        f"{how.get(n['method'], 'ablation against a typical record')}"
    )
    parts = [_bars(n["importance"], "feature", "mean |effect|", "global feature importance")]
    parts.append(table_html(n["importance"]))
    for ex in n["examples"]:
        head = f"<p>prediction <b>{html_lib.escape(str(ex['prediction']))}</b>, base {ex.get('base', '-')}</p>"
        parts.append(head + table_html(ex["effects"]))
    return Section(TITLE, n, "".join(parts), note=note)


# --- text --------------------------------------------------------------------------------------------------


def text_numbers(task: Any, valid: Any, max_texts: int = 40, steps: int = 32) -> dict[str, Any]:
    """Token attributions of `max_texts` validation texts: completeness errors, top words, three examples."""
    from luodi.tasks.token_attributions import explain_texts

    frame = valid.sample(max_texts, random_state=0) if len(valid) > max_texts else valid
    records = [{"text": t} for t in frame["text"].astype(str)]
    explained = explain_texts(task, records, steps=steps)
    errors = np.array([o["explanation"]["completeness_error"] for o in explained])
    return {
        "method": "integrated-gradients",
        "steps": steps,
        "texts": len(records),
        "target": "logit of the top class (" + explained[0]["explanation"]["target"].split(" (", 1)[1]
        if explained
        else None,
        "completeness_error_median": float(np.median(errors)) if len(errors) else None,
        "completeness_within_1pct": float(np.mean(errors <= COMPLETENESS_GOAL)) if len(errors) else None,
        "importance": global_importance(explained, key="token")[:20],
        "examples": [
            {"text": r["text"], "label": o["label"], "effects": o["explanation"]["effects"][:6]}
            for r, o in zip(records[:3], explained[:3], strict=True)
        ],
    }


def text_section(task: Any, valid: Any, max_texts: int = 40) -> Section:
    try:
        n = text_numbers(task, valid, max_texts)
    except BadRequest as e:  # a TF-IDF-only app: nothing differentiable to explain
        return Section(TITLE, status="skipped", note=e.message if hasattr(e, "message") else str(e))
    share = n["completeness_within_1pct"] or 0.0
    note = (
        f"integrated gradients over tokens ({n['steps']} steps) on {n['texts']} validation texts; "
        f"completeness error <= 1 % of the logit for {share:.0%} of them (goal >= 95 %)"
    )
    parts = [_bars(n["importance"], "token", "mean |effect| on the logit", "top tokens")]
    for ex in n["examples"]:
        words = ", ".join(f"{html_lib.escape(e['token'])} {e['effect']:+.3f}" for e in ex["effects"])
        parts.append(f"<p>“{html_lib.escape(ex['text'])}” → <b>{html_lib.escape(ex['label'])}</b>: {words}</p>")
    status = "ok" if share >= COMPLETENESS_SHARE else "warning"
    return Section(TITLE, n, "".join(parts), status=status, note=note)


# --- images ------------------------------------------------------------------------------------------------


def image_numbers(
    task: Any, valid: Any, examples: int = 4, steps: int = 32
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """IG over pixels of a few validation images (target: the predicted class): numbers, images, maps."""
    from luodi.evaluate.attributions import grid_attributions

    clf = task.need()
    x = task.model_input(valid)[:examples]
    target = clf.proba(x).argmax(1)
    ig = grid_attributions(clf.pixel_model(), x, target, steps)
    attr, err = ig["attr"], ig["error"]
    classes = clf.meta["classes"]
    numbers = {
        "method": "integrated-gradients",
        "steps": steps,
        "steps_used": [int(s) for s in ig["steps"]],
        "baseline": "black image",
        "images": len(x),
        "predicted": [str(classes[int(t)]) for t in target],
        "completeness_error": [round(float(e), 6) for e in err],
    }
    return numbers, x, attr


def image_section(task: Any, valid: Any, examples: int = 4) -> Section:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, x, attr = image_numbers(task, valid, examples)
    fig, axes = plt.subplots(2, len(x), figsize=(2 * len(x), 4), squeeze=False)
    for i in range(len(x)):
        axes[0, i].imshow(x[i].mean(0), cmap="gray")
        axes[0, i].set_title(f"→ {n['predicted'][i]}")
        heat = attr[i].sum(0)
        lim = float(np.abs(heat).max()) or 1.0
        axes[1, i].imshow(heat, cmap="bwr", vmin=-lim, vmax=lim)
        for ax in axes[:, i]:
            ax.axis("off")
    note = (
        f"integrated gradients over pixels ({_steps(n['steps'], max(n['steps_used'], default=n['steps']))}; "
        f"black baseline) on {n['images']} validation images"
    )
    html = figure_html(fig, "attribution heat maps (red: pushes towards the predicted class)") + table_html(
        [
            {"image": i, "predicted": p, "completeness_error": e}
            for i, (p, e) in enumerate(zip(n["predicted"], n["completeness_error"], strict=True))
        ]
    )
    return Section(TITLE, n, html, note=note)


def _steps(start: int, most: int) -> str:
    """How many integration steps were used: `start`, and more for the inputs that needed them."""
    return f"{start} steps" if most <= start else f"{start} steps, up to {most} where the error was above 1 %"


# --- speech ------------------------------------------------------------------------------------------------


def speech_numbers(task: Any, valid: Any, clips: int = 20, steps: int = 32) -> tuple[dict[str, Any], dict[str, Any]]:
    """IG over the frames of up to `clips` validation recordings spread over the set (target: the predicted
    word): numbers and the attributions (luodi.tasks.speech_explain.attribute_waves) for the plot, which shows
    three clips (`shown`), different predicted words where there are."""
    from luodi.tasks.speech_explain import attribute_waves

    pick = np.unique(np.linspace(0, len(valid) - 1, min(clips, len(valid))).round().astype(int))  # spread out
    a = attribute_waves(task, [valid.waves[i] for i in pick], steps)
    classes = task.need().meta["classes"]
    err = np.asarray(a["error"], dtype=float)
    seen: dict[int, int] = {}  # the first clip of each predicted word, for the plot
    for i, t in enumerate(a["target"]):
        seen.setdefault(int(t), i)
    shown = (list(seen.values()) + [i for i in range(len(err)) if i not in seen.values()])[:3]
    a["shown"] = shown
    numbers = {
        "method": "integrated-gradients",
        "steps": steps,
        "steps_used_max": int(a["steps"].max()) if len(a["steps"]) else steps,
        "baseline": "silence (the all-zero normalized log-mel)",
        "clips": len(err),
        "files": [str(valid.names[pick[i]]) for i in shown],
        "predicted": [str(classes[int(a["target"][i])]) for i in shown],
        "completeness_error": [round(float(err[i]), 6) for i in shown],
        "completeness_error_median": float(np.median(err)) if len(err) else None,
        "completeness_within_1pct": float(np.mean(err <= COMPLETENESS_GOAL)) if len(err) else None,
    }
    return numbers, a


def speech_section(task: Any, valid: Any, clips: int = 20) -> Section:
    if getattr(task, "kind", "cnn") != "cnn":
        return Section(TITLE, status="skipped", note="speech-embedding apps run an ONNX network: no gradients")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, a = speech_numbers(task, valid, clips)
    shown = len(a["shown"])
    fig, axes = plt.subplots(2, shown, figsize=(3 * shown, 4), squeeze=False, sharex="col", height_ratios=[1, 2])
    for i, k in enumerate(a["shown"]):
        times, step = a["times"][k]
        keep = np.isfinite(times)  # padding frames hold no audio (and have no effect)
        effect = a["attr"][k].sum((0, 1))[keep]
        t = times[keep]
        colors = np.where(effect >= 0, "#c0392b", "#2e6db4")
        axes[0, i].bar(t, effect, width=step, color=colors)
        axes[0, i].set_title(f"→ {n['predicted'][i]}")
        extent = (t[0] - step / 2, t[-1] + step / 2, -0.5, a["x"].shape[2] - 0.5)
        axes[1, i].imshow(a["x"][k][0][:, keep], origin="lower", aspect="auto", cmap="magma", extent=extent)
        axes[1, i].set_xlabel("seconds")
    axes[0, 0].set_ylabel("effect")
    axes[1, 0].set_ylabel("mel band")
    share = n["completeness_within_1pct"] or 0.0
    note = (
        f"integrated gradients over log-mel frames ({_steps(n['steps'], n['steps_used_max'])}; silence baseline) "
        f"on {n['clips']} validation clips; completeness error <= 1 % of the logit for {share:.0%} of them "
        "(goal >= 95 %)"
    )
    html = figure_html(fig, "each frame's effect on the predicted word (red: towards it) over the spectrogram")
    html += table_html(
        [
            {"file": f, "predicted": p, "completeness_error": e}
            for f, p, e in zip(n["files"], n["predicted"], n["completeness_error"], strict=True)
        ]
    )
    return Section(TITLE, n, html, status="ok" if share >= COMPLETENESS_SHARE else "warning", note=note)
