"""The robustness part of the audit: accuracy on clean inputs against accuracy under an attack, and its curve.

- Image apps: the CNN behind its normalization, attacked in pixel space ([0, 1]) with ART (FGSM or PGD).
- Table apps (tabular, anomaly-detection): served models are tree ensembles or thresholds without gradients, so a
  small differentiable surrogate learns the served answers on the training rows; PGD on the surrogate moves only
  numeric columns that may move, within their training range (luodi.evaluate.robustness.FeatureSpace), and the
  rows it crafts are replayed on the served model. Both numbers are reported and named: the served model under
  this transfer attack, and the surrogate under the white-box one.
- Other tasks (text, speech, recommendation, generation): skipped, saying why.
"""

from __future__ import annotations

import html as html_lib
from typing import Any

import numpy as np

from luodi.audit.section import Section, figure_html, table_html
from luodi.errors import ConfigError
from luodi.evaluate.robustness import (
    ATTACKS,
    FeatureSpace,
    accuracy_curve,
    art_accuracy,
    art_adversarial,
    art_classifier,
    fit_surrogate,
)

TITLE = "Robustness"
IMAGE_EPS = (0.0, 0.05, 0.1, 0.2, 0.3)  # pixels in [0, 1]
TABLE_EPS = (0.0, 0.1, 0.25, 0.5, 1.0)  # training standard deviations of each numeric feature
TABLE_GOAL = 0.90  # share of clean accuracy to keep under the feature-valid PGD (nsl-kdd goal)
TABLE_TASKS = ("tabular", "anomaly-detection")


def section(
    pred: Any,
    train: Any,
    valid: Any,
    attack: str = "pgd",
    eps: float | None = None,
    *,
    attack_steps: int = 20,
    attack_restarts: int = 1,
    attack_rows: int = 1000,
    **_: Any,
) -> Section:
    """Clean against robust quality of the app behind `pred` (a Predictor: .task, .config) on (the first
    `attack_rows` of) `valid`; PGD takes `attack_steps` steps from `attack_restarts` random starts."""
    if attack not in ATTACKS:
        raise ConfigError(f"--attack '{attack}' is unknown; expected {' or '.join(ATTACKS)}", param="attack")
    if eps is not None and eps < 0:
        raise ConfigError(f"--eps must be >= 0 (got {eps})", param="eps")
    task = pred.task
    options = {"steps": attack_steps, "restarts": attack_restarts, "max_rows": attack_rows}
    if task.name == "image-classification":
        return image_section(task, valid, attack, eps, **options)
    if task.name in TABLE_TASKS:
        if getattr(task, "objective", None) == "regression":
            return skipped("a regression app: the attacks here measure classification accuracy")
        return table_section(task, train, valid, attack, eps, **options)
    why = {
        "text-classification": "text apps need word-substitution attacks, not built yet",
        "speech-recognition": "speech apps (input-space attacks on recordings) are not built yet",
    }.get(task.name, f"task {task.name} has no attack here")
    return skipped(why)


def skipped(why: str) -> Section:
    return Section(TITLE, {"status": "skipped", "why": why}, status="skipped", note=f"skipped: {why}")


# --- images ------------------------------------------------------------------------------------------------


def image_numbers(
    task: Any, data: Any, attack: str, eps: float | None, *, max_rows: int = 1000, **options: int
) -> dict[str, Any]:
    """Clean and attacked accuracy of an image app on (the first `max_rows` of) `data`, and the eps curve."""
    clf = task.need()
    adv = task.config.train.adversarial
    eps = eps if eps is not None else (adv.eps if adv is not None else 0.1)
    x = task.model_input(data)[:max_rows]
    y = clf.targets(data.y, "labels").numpy()[:max_rows]
    art = art_classifier(clf.pixel_model(), len(clf.meta["classes"]), tuple(x.shape[1:]), (0.0, 1.0))
    curve = accuracy_curve(art, x, y, attack, sorted({*IMAGE_EPS, eps}), **options)
    robust = next(r["accuracy"] for r in curve if r["eps"] == eps)
    return {
        "attacked": "the CNN in pixel space ([0, 1]), white-box",
        "attack": attack,
        "eps": eps,
        **({"steps": options.get("steps", 50), "restarts": options.get("restarts", 1)} if attack == "pgd" else {}),
        "n": len(y),
        "clean_accuracy": curve[0]["accuracy"],
        "robust_accuracy": robust,
        "adversarial_training": adv.model_dump() if adv is not None else None,
        "curve": curve,
    }


def image_section(task: Any, valid: Any, attack: str, eps: float | None, **options: Any) -> Section:
    n = image_numbers(task, valid, attack, eps, **options)
    note = (
        f"{attack.upper()} at eps {n['eps']:g} (pixels in [0, 1]) on {n['n']} validation images: accuracy "
        f"{n['clean_accuracy']:.3f} clean, {n['robust_accuracy']:.3f} attacked"
        + ("; trained adversarially" if n["adversarial_training"] else "; trained without adversarial examples")
    )
    html = _curve_figure(n["curve"], "eps (pixels in [0, 1])", "accuracy against eps") + table_html(n["curve"])
    return Section(TITLE, n, html, note=note)


# --- tables ------------------------------------------------------------------------------------------------


def served_truth(task: Any, df: Any) -> np.ndarray:
    """The labels the served model answers with, for each row's true label (anomaly apps: normal / attack)."""
    if task.name == "anomaly-detection":
        anomalous = (task.cols.map_labels(df[task.cols.label]) != task.opts.normal).to_numpy()
        return np.where(anomalous, task.opts.attack_label, task.opts.normal)
    return df[task.cols.label].astype(str).to_numpy()


def served_labels(task: Any, df: Any) -> np.ndarray:
    records = df[list(task.prep.features)].to_dict("records")
    return np.array([str(r["label"]) for r in task.predict(records)])


def table_numbers(
    task: Any, train: Any, valid: Any, attack: str, eps: float | None, *, max_rows: int = 1000, **options: int
) -> dict[str, Any]:
    """Clean and attacked accuracy of a table app: a surrogate crafts feature-valid attacks, the served model
    answers them (see the module docstring)."""
    eps = 0.25 if eps is None else eps
    prep = task.prep
    # ordered categories (model.options.ordinal) reach the preprocessor as ranks; as categories they never move
    encode = getattr(task, "encode_ordinal", None) or (lambda df: df)
    ordered = set(getattr(task, "ordinal", None) or ())
    space = FeatureSpace.fit(encode(train), prep.numeric, getattr(prep, "log1p", ()))
    space.movable = space.movable & np.array([c not in ordered for c in space.columns], bool)
    train = train.sample(min(len(train), 4000), random_state=0)
    valid = valid.iloc[:max_rows]
    served_train = served_labels(task, train)
    truth = served_truth(task, valid)
    classes = sorted({*served_train, *truth})
    index = {c: i for i, c in enumerate(classes)}

    def inputs(df: Any) -> np.ndarray:
        df = encode(df)
        onehot = prep.dense_matrix(df)[:, len(prep.numeric) :]  # categories: fixed, never attacked
        return np.hstack([space.to_z(df), onehot]).astype(np.float32)

    surrogate = fit_surrogate(inputs(train), np.array([index[c] for c in served_train]), len(classes))
    xv, yv = inputs(valid), np.array([index[c] for c in truth])
    n_num = len(space.columns)
    zlo, zhi = space.z_bounds()
    lo = np.concatenate([zlo, np.zeros(xv.shape[1] - n_num, np.float32)])
    hi = np.concatenate([zhi, np.ones(xv.shape[1] - n_num, np.float32)])
    hi = np.maximum(hi, lo + 1e-6)  # a constant column (ART wants min < max); it never moves anyway
    art = art_classifier(surrogate, len(classes), (xv.shape[1],), (lo, hi))
    mask = np.concatenate([space.movable, np.zeros(xv.shape[1] - n_num, bool)]).astype(np.float32)
    curve = []
    for e in sorted({*TABLE_EPS, eps}):
        adv = art_adversarial(art, attack, xv, yv, e, mask=np.broadcast_to(mask, xv.shape).copy(), **options)
        attacked = space.apply(valid, adv[:, :n_num])
        curve.append(
            {
                "eps": e,
                "served_accuracy": float((served_labels(task, attacked) == truth).mean()),
                "surrogate_accuracy": art_accuracy(art, inputs(attacked), yv),
            }
        )
    at = next(r for r in curve if r["eps"] == eps)
    clean = curve[0]["served_accuracy"]
    return {
        "attacked": "a differentiable surrogate (MLP imitating the served answers); its adversarial rows are "
        "replayed on the served model (transfer attack)",
        "attack": attack,
        "eps": eps,
        "eps_unit": "training standard deviations per numeric feature (after the preprocessor's log1p)",
        "n": len(truth),
        "moved_features": [c for c, m in zip(space.columns, space.movable, strict=True) if m],
        "fixed_features": [c for c, m in zip(space.columns, space.movable, strict=True) if not m]
        + list(prep.categorical),
        "clean_accuracy": clean,
        "robust_accuracy": at["served_accuracy"],
        "kept_share": at["served_accuracy"] / clean if clean else float("nan"),
        "surrogate_clean_accuracy": curve[0]["surrogate_accuracy"],
        "surrogate_robust_accuracy": at["surrogate_accuracy"],
        "goal_kept_share": TABLE_GOAL,
        "curve": curve,
    }


def table_section(task: Any, train: Any, valid: Any, attack: str, eps: float | None, **options: Any) -> Section:
    n = table_numbers(task, train, valid, attack, eps, **options)
    ok = n["kept_share"] >= TABLE_GOAL
    note = (
        f"feature-valid {attack.upper()} at eps {n['eps']:g} std on {n['n']} validation rows, crafted on a surrogate "
        f"and replayed on the served model: accuracy {n['clean_accuracy']:.3f} clean, {n['robust_accuracy']:.3f} "
        f"attacked ({n['kept_share']:.1%} kept; goal >= {TABLE_GOAL:.0%})"
    )
    rows = [{"eps": r["eps"], "accuracy": r["served_accuracy"]} for r in n["curve"]]
    html = (
        _curve_figure(rows, "eps (training std per numeric feature)", "served accuracy against eps")
        + table_html(n["curve"])
        + "<p>Moved: "
        + html_lib.escape(", ".join(n["moved_features"]))
        + ". Never moved (categories, flags): "
        + html_lib.escape(", ".join(n["fixed_features"]))
        + ".</p>"
    )
    return Section(TITLE, n, html, status="ok" if ok else "warning", note=note)


def _curve_figure(rows: list[dict[str, float]], xlabel: str, title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.plot([r["eps"] for r in rows], [r["accuracy"] for r in rows], marker="o")
    ax.set(xlabel=xlabel, ylabel="accuracy", ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    return figure_html(fig, title)
