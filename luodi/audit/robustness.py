"""The robustness part of the audit: accuracy on clean inputs against accuracy under an attack, and its curve.

- Image apps: the CNN behind its normalization, attacked in pixel space ([0, 1]) with ART (FGSM or PGD).
- Table apps (tabular, anomaly-detection): served models are tree ensembles or thresholds without gradients, so a
  small differentiable surrogate learns the served answers on the training rows; PGD on the surrogate moves only
  numeric columns that may move, within their training range (luodi.evaluate.robustness.FeatureSpace), and the
  rows it crafts are replayed on the served model. Both numbers are reported and named: the served model under
  this transfer attack, and the surrogate under the white-box one.
- Text classification apps: a black-box word-substitution attack on the served predictor
  (luodi.evaluate.text_attacks): words swapped for their nearest whole-word neighbours in the bundled MiniLM's
  input-embedding table, greedy by drop-one importance, up to a share of the words (eps 0.1: 10 %, at least one).
  The report gives the curve over budgets, the sentence-embedding similarity of the attacked texts to the
  originals, and examples with the changed words marked.
- Speech apps: an input-space attack on the waveform (luodi.evaluate.speech_attacks), eps in units of each
  recording's peak amplitude. CNN apps: white-box through the log-mel path rebuilt in torch; speech-embedding
  apps (an ONNX network, no torch gradients): a transfer attack crafted on a small log-mel CNN that learns the
  served answers, replayed on the served model, and named so.
- Other tasks (recommendation, generation): skipped, saying why.
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
TEXT_EPS = (0.0, 0.05, 0.1, 0.2, 0.3)  # share of a text's words the attack may change
TEXT_ROWS = 500  # validation texts attacked at most (each costs about (words x candidates) queries)
SPEECH_EPS = (0.0, 0.001, 0.003, 0.01, 0.03)  # L-inf, in units of each recording's peak amplitude
SIMILARITY_ENCODER = "bundled:minilm-l6"


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
    if task.name == "text-classification":
        if not task.classes:
            return skipped("the text app is not trained: nothing to attack")
        return text_section(task, valid, eps, max_rows=min(attack_rows, TEXT_ROWS))
    if task.name == "speech-recognition":
        return speech_section(task, train, valid, attack, eps, **options)
    return skipped(f"task {task.name} has no attack here")


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


# --- text ------------------------------------------------------------------------------------------------


def text_numbers(
    task: Any,
    data: Any,
    eps: float | None,
    *,
    max_rows: int = TEXT_ROWS,
    candidates: int = 10,
    min_cosine: float = 0.4,
    examples: int = 3,
) -> dict[str, Any]:
    """Clean and attacked accuracy of a text-classification app under the word-substitution attack, on (the
    first `max_rows` of) `data`; eps = the share of each text's words that may change (default 0.1)."""
    import time

    from luodi.embeddings import get_encoder
    from luodi.evaluate import text_attacks as ta

    eps = 0.1 if eps is None else eps
    data = data.iloc[:max_rows]
    texts, truths = data.text.astype(str).tolist(), data.label.astype(str).tolist()
    enc = get_encoder(SIMILARITY_ENCODER)
    table = enc.model.get_input_embeddings().weight.detach().numpy()
    vocab = enc.tokenizer.convert_ids_to_tokens(list(range(len(table))))
    neighbours = ta.Neighbours.from_table(vocab, table, candidates, min_cosine)
    queries = [0]

    def probe(batch: list[str], truth: list[str]) -> tuple[np.ndarray, np.ndarray]:
        queries[0] += len(batch)
        outs = task.predict([{"text": t} for t in batch])
        p = [next((s["score"] for s in o["top_k"] if s["label"] == y), 0.0) for o, y in zip(outs, truth, strict=True)]
        return np.array([o["label"] for o in outs], dtype=object), np.array(p)

    start = time.process_time()
    attacked = ta.attack_texts(probe, texts, truths, neighbours, max(*TEXT_EPS, eps))
    cpu = time.process_time() - start
    curve = ta.curve(attacked, sorted({*TEXT_EPS, eps}))
    at = next(r for r in curve if r["eps"] == eps)
    moved = [a for a in attacked if a.changes and a.clean_label == a.truth]
    sims = _similarity(enc, [a.text for a in moved], [a.at(eps)[0] for a in moved])
    fooled = [(a, s) for a, s in zip(moved, sims, strict=True) if a.at(eps)[1] != a.truth]
    return {
        "attacked": "the served predictor as a black box (its answers only): word substitution",
        "attack": "word-substitution",
        "eps": eps,
        "eps_unit": "share of each text's words that may be replaced (at least one word)",
        "candidates": f"up to {candidates} nearest whole words (cosine >= {min_cosine}) in the input-embedding "
        f"table of {SIMILARITY_ENCODER}; stop words never replaced",
        "n": len(attacked),
        "clean_accuracy": curve[0]["accuracy"],
        "robust_accuracy": at["accuracy"],
        "kept_share": at["accuracy"] / curve[0]["accuracy"] if curve[0]["accuracy"] else float("nan"),
        "similarity": {
            "what": f"cosine of the {SIMILARITY_ENCODER} sentence embeddings, original vs attacked text (texts "
            "with at least one word changed)",
            "n": len(sims),
            "mean": float(np.mean(sims)) if len(sims) else None,
            "p10": float(np.percentile(sims, 10)) if len(sims) else None,
            "min": float(np.min(sims)) if len(sims) else None,
        },
        "queries": queries[0],
        "cpu_seconds": round(cpu, 1),
        "curve": curve,
        "examples": [
            {
                "label": a.truth,
                "attacked_label": a.at(eps)[1],
                "text": a.text,
                "attacked": ta.marked(a, eps),
                "changed": f"{len(a.at(eps)[2])} of {a.n_words} words",
                "similarity": round(float(s), 3),
            }
            for a, s in sorted(fooled, key=lambda t: -t[1])[:examples]
        ],
    }


def _similarity(enc: Any, a: list[str], b: list[str]) -> np.ndarray:
    if not a:
        return np.zeros(0)
    return np.sum(enc.encode(a) * enc.encode(b), axis=1)  # encode() L2-normalizes


def text_section(task: Any, valid: Any, eps: float | None, **options: Any) -> Section:
    n = text_numbers(task, valid, eps, **options)
    sim = n["similarity"]
    note = (
        f"word substitution (black box), up to {n['eps']:.0%} of each text's words, on {n['n']} validation texts: "
        f"accuracy {n['clean_accuracy']:.3f} clean, {n['robust_accuracy']:.3f} attacked"
        + (f"; attacked texts keep a mean sentence similarity of {sim['mean']:.3f}" if sim["n"] else "")
    )
    html = (
        _curve_figure(n["curve"], "share of words changed (budget)", "accuracy against the word budget")
        + table_html(n["curve"])
        + "<p>"
        + html_lib.escape(f"Candidates: {n['candidates']}. Similarity: {sim['what']}.")
        + "</p>"
        + table_html(n["examples"])
    )
    return Section(TITLE, n, html, note=note)


# --- speech ----------------------------------------------------------------------------------------------


def speech_model(task: Any, train: Any) -> tuple[Any, str]:
    """The torch model attacked for a speech app (packed recordings -> log-probabilities) and what it is."""
    import torch

    from luodi.data.audio import mel_filterbank
    from luodi.evaluate import speech_attacks as sa

    sr = task.sample_rate
    if task.kind == "cnn":
        o = sa.FeatureOptions(sr, task.n_mels, task.frames, task.hop_ms, **task.feature_options)
    else:  # the surrogate's features: those of examples/spoken-digits-cnn.yaml
        o = sa.FeatureOptions(sr, 32, 32, 16.0, trim_db=20, fit="resize", lifter=16, floor_db=40)
    feats = sa.WaveFeatures(o, mel_filterbank(sr, _n_fft(o), o.n_mels))
    if task.kind == "cnn":
        clf = task.need()
        classify = sa.ensemble_classifier([m.model for m in clf.members], clf.meta["mean"], clf.meta["std"])
        what = "the CNN ensemble on the waveform through its log-mel path (rebuilt in torch), white-box"
        if task.tta_speeds:
            what += f"; crafted on the 1x copy, the served model averages speeds {task.tta_speeds}"
        return sa.WaveModel(feats, classify), what
    sample = train.subset(range(0, len(train), max(1, len(train) // 2000)))
    served = task.proba(sample.waves).argmax(1)
    with torch.no_grad():
        grids = torch.stack([feats(torch.from_numpy(w)) for w in sample.waves]).numpy()
    net = sa.fit_surrogate_cnn(grids, served, len(task.need().meta["classes"]))
    what = (
        "transfer attack: a small log-mel CNN learns the served answers on the training recordings (the "
        "pretrained ONNX speech embedding has no torch gradients); its waveform attacks are replayed on the "
        "served model"
    )
    return sa.WaveModel(feats, lambda g: torch.log_softmax(net(g), 1)), what


def _n_fft(o: Any) -> int:
    win = int(round(o.sample_rate * o.win_ms / 1000))
    return 1 << (win - 1).bit_length()


def speech_numbers(
    task: Any,
    train: Any,
    data: Any,
    attack: str,
    eps: float | None,
    *,
    max_rows: int = 1000,
    curve_eps: tuple[float, ...] = SPEECH_EPS,
    **options: int,
) -> dict[str, Any]:
    """Clean and attacked accuracy of a speech app on (`max_rows` evenly spread rows of) `data` under an L-inf attack on
    the waveform, eps in units of each recording's peak amplitude (default 0.01), and the curve over
    `curve_eps` (with 0 and eps)."""
    from luodi.evaluate import speech_attacks as sa

    eps = 0.01 if eps is None else eps
    if len(data) > max_rows:  # evenly spread: files sorted by name come grouped by label
        data = data.subset(np.linspace(0, len(data) - 1, max_rows).round().astype(int))
    y = task.need().targets(data.labels, "label").numpy()
    model, what = speech_model(task, train)
    rows, mask = sa.pack(data.waves)
    art = art_classifier(model, len(task.need().meta["classes"]), (rows.shape[1],), (-1.0, 1.0))
    curve = []
    for e in sorted({0.0, *curve_eps, eps}):
        adv = art_adversarial(art, attack, rows, y, e, mask=mask, **options)
        waves = sa.unpack(adv) if e > 0 else list(data.waves)
        curve.append(
            {
                "eps": e,
                "accuracy": float((task.proba(waves).argmax(1) == y).mean()),
                "crafted_on_accuracy": art_accuracy(art, adv, y),
                "snr_db": sa.snr_db(data.waves, waves) if e > 0 else None,
            }
        )
    at = next(r for r in curve if r["eps"] == eps)
    return {
        "attacked": what,
        "attack": attack,
        "eps": eps,
        "eps_unit": "L-inf, share of each recording's peak amplitude (0.01: every sample moves by at most 1 % "
        "of the loudest one, -40 dB of the peak); snr_db: recording power against added-noise power",
        **({"steps": options.get("steps", 50), "restarts": options.get("restarts", 1)} if attack == "pgd" else {}),
        "n": len(y),
        "clean_accuracy": curve[0]["accuracy"],
        "robust_accuracy": at["accuracy"],
        "snr_db": at["snr_db"],
        "curve": curve,
    }


def speech_section(task: Any, train: Any, valid: Any, attack: str, eps: float | None, **options: Any) -> Section:
    n = speech_numbers(task, train, valid, attack, eps, **options)
    snr = f", SNR {n['snr_db']:.1f} dB" if n["snr_db"] is not None else ""
    note = (
        f"{attack.upper()} on the waveform at eps {n['eps']:g} of each recording's peak{snr}, on {n['n']} "
        f"validation recordings: accuracy {n['clean_accuracy']:.3f} clean, {n['robust_accuracy']:.3f} attacked"
        + ("" if task.kind == "cnn" else " (transfer attack through a surrogate CNN)")
    )
    html = (
        _curve_figure(n["curve"], "eps (share of each recording's peak amplitude)", "served accuracy against eps")
        + table_html(n["curve"])
        + "<p>"
        + html_lib.escape(f"Attacked: {n['attacked']}. eps: {n['eps_unit']}.")
        + "</p>"
    )
    return Section(TITLE, n, html, note=note)


def _curve_figure(rows: list[dict[str, float]], xlabel: str, title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.plot([r["eps"] for r in rows], [r["accuracy"] for r in rows], marker="o")
    ax.set(xlabel=xlabel, ylabel="accuracy", ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    return figure_html(fig, title)
