"""Explanations: single-record latency of a table app, and the completeness of a text app's integrated gradients.

    python bench/explain.py [--app credit-risk] [--records 500] [--home DIR]
    python bench/explain.py --text-app banking-intents [--texts 200] [--steps 32] [--home DIR]

Latency: one record explained at a time (TreeSHAP for LightGBM + ablation of the other members), p50 / p99,
through the task's `explain` (what `predict?explain=true` and `POST /v1/apps/{name}/explain` call, without HTTP),
beside plain predict's; where explain's CPU time goes; and the previous path (forests and SVMs through
onnxruntime on every ablated row, `task.fast_ablation = False`) against the ablation replay, record by record in
this process, with the largest difference between their answers. The newest finished run under --home is
measured, served or not (a fresh credit-risk run is held by the goal gate). Goal: p99 <= 5 ms on credit-risk
(issue 19). Wall time is what the goal reads; each call's CPU time (time.process_time) and the 1-minute load
average before and after are stored beside it, as a busy machine stretches wall time: rerun on a quiet machine
before trusting a miss (or a pass) on wall time.
Completeness: |sum of attributions - (logit(x) - logit(baseline))| / |logit(x)| on `--texts` validation texts.
Goal: <= 1 % for >= 95 % of banking77 validation texts at <= 32 steps. banking-intents is trained here (when
--home has no run of it) with its frozen-encoder and TF-IDF heads only: the fine-tuned head takes hours of CPU.
Apps are trained first unless a finished run exists under --home (LUODI_HOME; default a temporary folder); the
shared datasets are needed (LUODI_DATASETS). Printed, not asserted; stored in bench/results/explain.json
(record.py): each app's latency and the completeness, each kept from its last run, and the goals from them.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from record import load, machine, save

ROOT = Path(__file__).resolve().parents[1]
APPS = {
    "credit-risk": ROOT / "examples" / "credit-risk.yaml",
    "income": ROOT / "examples" / "income.yaml",
    "banking-intents": ROOT / "examples" / "banking-intents.yaml",
}
TEXT_OVERRIDES = {  # the frozen-encoder head (differentiable) and TF-IDF; no fine-tuning on a CPU
    "model.options.features": ["embeddings", "tfidf"],
    "model.options.head_weights": {"embeddings": 0.85, "tfidf": 0.15},
}
GOAL_P99_MS = 5.0
GOAL_SHARE, GOAL_STEPS = 0.95, 32
NAME = "explain"


def latencies(fn, rows: list[dict]) -> tuple[list[float], list[float]]:
    """Milliseconds of fn([row]) for each row, one at a time: wall clock and this process's CPU time."""
    wall, cpu = [], []
    for r in rows:
        t, c = time.perf_counter(), time.process_time()
        fn([r])
        wall.append(1000 * (time.perf_counter() - t))
        cpu.append(1000 * (time.process_time() - c))
    return wall, cpu


def pct(ms: list[float]) -> dict[str, float]:
    p50, p99 = np.percentile(ms, [50, 99])
    return {"p50": round(float(p50), 3), "p99": round(float(p99), 3)}


def goals(stored: dict) -> list[dict]:
    """The goals from the stored measurements (each kept from its last run)."""
    out = []
    lat = stored.get("latency", {}).get("credit-risk")
    if lat:
        e, p, ce, cp = lat["explain_ms"], lat["predict_ms"], lat["explain_cpu_ms"], lat["predict_cpu_ms"]
        load_note = (
            f"1-min load average {lat['load_before']} -> {lat['load_after']} on {lat['cores']} cores; "
            "wall time stretches with the load: rerun on a quiet machine"
        )
        out.append(
            {
                "goal": "credit-risk: single-record explain p99 (ms)",
                "value": e["p99"],
                "target": GOAL_P99_MS,
                "op": "<=",
                "met": e["p99"] <= GOAL_P99_MS,
                "note": f"{lat['records']} records; p50 {e['p50']} ms; CPU (process_time) p50 {ce['p50']}, p99 "
                f"{ce['p99']} ms; {load_note}",
            }
        )
        for what, v in (
            ("explain p50 (ms)", e["p50"]),
            ("explain CPU time p99 (ms, process_time)", ce["p99"]),
            ("predict p50 (ms)", p["p50"]),
            ("predict p99 (ms)", p["p99"]),
            ("predict CPU time p99 (ms, process_time)", cp["p99"]),
        ):
            out.append(
                {
                    "goal": f"credit-risk: single-record {what}",
                    "value": v,
                    "target": None,
                    "op": None,
                    "met": None,
                    "note": "measured beside the goal",
                }
            )
    comp = stored.get("completeness")
    goal = f"banking77: share of validation texts with completeness error <= 1 % at <= {GOAL_STEPS} steps"
    if comp:
        ok = comp["share"] >= GOAL_SHARE and comp["steps"] <= GOAL_STEPS
        note = f"{comp['texts']} texts, {comp['steps']} steps, {comp['app']} ({comp['heads']}); {comp['date']}"
        out.append({"goal": goal, "value": comp["share"], "target": GOAL_SHARE, "op": ">=", "met": ok, "note": note})
    else:
        out.append(
            {
                "goal": goal,
                "value": None,
                "target": GOAL_SHARE,
                "op": ">=",
                "met": False,
                "note": "not measured yet: python bench/explain.py --text-app banking-intents",
            }
        )
    return out


def store(part: str, data: dict) -> None:
    """Merge one measurement into bench/results/explain.json and recompute the goals."""
    stored = load(NAME) or {}
    if part == "completeness":
        stored["completeness"] = data
    else:
        stored.setdefault("latency", {})[part] = data
    stored["machine"] = machine()
    stored["goals"] = goals(stored)
    print(f"stored in {save(NAME, stored)}")


def text_completeness(app: str, n: int, steps: int) -> None:
    from luodi import api
    from luodi.apps import registry
    from luodi.tasks.token_attributions import explain_texts

    if app not in registry.apps_with_runs():
        print(f"training {app} (features: embeddings, tfidf) ...", flush=True)
        api.train(APPS[app], progress=False, overrides=TEXT_OVERRIDES)
    task = api.load_predictor(app).task
    _, valid = task.split(task.read(None))
    texts = valid.sample(min(n, len(valid)), random_state=0).text.astype(str).tolist()
    t = time.perf_counter()
    outs = explain_texts(task, [{"text": x} for x in texts], steps=steps)
    seconds = time.perf_counter() - t
    err = np.array([o["explanation"]["completeness_error"] for o in outs])
    share = float(np.mean(err <= 0.01))
    print(
        f"{app}: integrated gradients, {steps} steps, {len(texts)} validation texts ({seconds / len(texts):.2f} s each)"
    )
    print(f"  target: {outs[0]['explanation']['target']}")
    print(
        f"  completeness error <= 1 %: {share:.1%} of texts (goal >= 95 %: {'met' if share >= 0.95 else 'MISSED'}); "
        f"median {np.median(err):.2e}, p95 {np.percentile(err, 95):.2e}, max {err.max():.2e}"
    )
    top = ", ".join(f"{e['token']} {e['effect']:+.2f}" for e in outs[0]["explanation"]["effects"][:4])
    print(f"  e.g. “{texts[0]}” → {outs[0]['label']}: {top}")
    store(
        "completeness",
        {
            "app": app,
            "heads": "features: embeddings, tfidf",
            "texts": len(texts),
            "steps": steps,
            "share": round(share, 4),
            "median": float(np.median(err)),
            "p95": float(np.percentile(err, 95)),
            "max": float(err.max()),
            "seconds_per_text": round(seconds / len(texts), 3),
            "date": time.strftime("%Y-%m-%d"),
        },
    )


def breakdown(task, rows: list[dict]) -> dict[str, float]:
    """Mean CPU milliseconds per explained record of explain's parts (a table app with LightGBM): the other
    members on the record and its ablated rows (forest and SVM replayed by luodi.evaluate.onnx_ablation, MLP,
    linear model; beside it the same through onnxruntime, the previous path), TreeSHAP of the boosters, and
    everything else (encoding, calibration, the answer), measured one record at a time like the latency."""
    from luodi.evaluate.explain import typical_record

    typical = typical_record(task.prep, task.ordinal or {})
    rest = tuple(m for m, w in task.weights.items() if w > 0 and m != "lightgbm")
    encoded, varied = [], []
    for r in rows:
        same = np.array([[r.get(f) == typical[f] for f in task.prep.features]], dtype=bool)
        rec, feat = np.nonzero(~same) if rest else (np.zeros(0, np.intp), np.zeros(0, np.intp))
        encoded.append(task._ablation_rows([r], typical, rec, feat))
        varied.append(rec)
    members = task.members or [task]
    for e in encoded:  # encoded beforehand (kept with the rows): the parts timed below are the models alone
        for j, m in enumerate(members):
            ms = e.matrices(j)
            ms("lgb"), ms("dense"), m.coded_prep is not None and ms("coded")
    replayed = bool(rest) and task._ablation_kernels() is not None

    def cpu(fn) -> float:
        c = time.process_time()
        for i in range(len(rows)):
            fn(i)
        return 1000 * (time.process_time() - c) / len(rows)

    total = cpu(lambda i: task.explain(rows[i : i + 1]))
    other = cpu(lambda i: task._ablated_proba(encoded[i], 1, varied[i], rest)) if rest else 0.0
    task.fast_ablation = False
    before = cpu(lambda i: task._ablated_proba(encoded[i], 1, varied[i], rest)) if rest else 0.0
    task.fast_ablation = True
    shap = cpu(lambda i: task._tree_effects(encoded[i], 1, exact=not rest))
    rows_ = [e.n for e in encoded]
    return {
        "explain": round(total, 3),
        "other_members": round(other, 3),
        "other_members_onnxruntime": round(before, 3),
        "treeshap": round(shap, 3),
        "rest": round(total - other - shap, 3),
        "rows_per_record": round(float(np.mean(rows_)), 2),
        "replayed": replayed,
    }


def previous_path(task, rows: list[dict]) -> dict[str, dict[str, float]]:
    """CPU milliseconds per record of explain through onnxruntime (the path before the ablation replay) and
    through the replay, alternating record by record in this process (the same load for both), and the largest
    difference between their answers' effects, bases and probabilities."""
    old, new, diff = [], [], 0.0
    for r in rows:
        task.fast_ablation = False
        c = time.process_time()
        a = task.explain([r])[0]
        old.append(1000 * (time.process_time() - c))
        task.fast_ablation = True
        c = time.process_time()
        b = task.explain([r])[0]
        new.append(1000 * (time.process_time() - c))
        ea = {e["feature"]: e["effect"] for e in a["explanation"]["effects"]}
        eb = {e["feature"]: e["effect"] for e in b["explanation"]["effects"]}
        gaps = [abs(ea.get(f, 0.0) - eb.get(f, 0.0)) for f in {*ea, *eb}]
        gaps += [abs(a["explanation"]["base"] - b["explanation"]["base"]), abs(a["probability"] - b["probability"])]
        diff = max(diff, *gaps)
    return {"onnxruntime_cpu_ms": pct(old), "replay_cpu_ms": pct(new), "max_abs_difference": diff}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--app", default="credit-risk", choices=sorted(APPS))
    ap.add_argument("--records", type=int, default=500)
    ap.add_argument("--home", default=None, help="LUODI_HOME holding (or receiving) the trained run")
    ap.add_argument("--text-app", default=None, help="measure integrated-gradients completeness on this text app")
    ap.add_argument("--texts", type=int, default=200)
    ap.add_argument("--steps", type=int, default=32)
    args = ap.parse_args()
    os.environ["LUODI_HOME"] = args.home or os.environ.get("LUODI_HOME") or tempfile.mkdtemp(prefix="luodi-explain-")
    from luodi import api
    from luodi.apps import registry

    if args.text_app:
        text_completeness(args.text_app, args.texts, args.steps)
        return
    if args.app not in registry.apps_with_runs():
        print(f"training {args.app} ...", flush=True)
        api.train(APPS[args.app], progress=False)
    # the newest finished run, served or not: a fresh home's run may be held by the goal gate (credit-risk's
    # refit run scores its validation rows below 0.80), and this measures the explainer, not the gate
    done = [r for r in registry.list_runs(args.app) if r.status == "done"]
    pred = api.load_predictor(args.app, done[0].version)
    task = pred.task
    _, valid = task.split(task.read(None))
    rows = valid[task.prep.features].to_dict(orient="records")
    rows = (rows * (args.records // max(1, len(rows)) + 1))[: args.records]
    for r in rows[:20]:  # warm-up: first calls load libraries, build ONNX sessions' caches, the row coder
        task.explain([r])
        task.predict([r])
    load_before = round(os.getloadavg()[0], 2)
    (explain_ms, explain_cpu), (predict_ms, predict_cpu) = latencies(task.explain, rows), latencies(task.predict, rows)
    load_after = round(os.getloadavg()[0], 2)
    out = task.explain(rows[-1:])
    ex = out[0]["explanation"]
    e, p, ce, cp = pct(explain_ms), pct(predict_ms), pct(explain_cpu), pct(predict_cpu)
    verdict = ("met" if e["p99"] <= GOAL_P99_MS else "MISSED") if args.app == "credit-risk" else "credit-risk's"
    print(f"{args.app} {pred.run.version}: {len(rows)} single-record explanations ({ex['method']})")
    print(f"  explain p50 {e['p50']:.2f} ms   p99 {e['p99']:.2f} ms   (goal p99 <= {GOAL_P99_MS} ms: {verdict})")
    print(f"  predict alone (no explanation) p50 {p['p50']:.2f} ms   p99 {p['p99']:.2f} ms")
    print(
        f"  CPU time (process_time): explain p50 {ce['p50']:.2f} p99 {ce['p99']:.2f} ms, "
        f"predict p50 {cp['p50']:.2f} p99 {cp['p99']:.2f} ms"
    )
    print(f"  1-minute load average {load_before} before, {load_after} after ({os.cpu_count()} cores)")
    top = ", ".join(f"{e['feature']} {e['effect']:+.3f}" for e in ex["effects"][:3])
    print(f"  last record: {ex['target']} = {ex['base']:.3f} (base) + effects; top: {top}")
    parts = breakdown(task, rows[:200])
    others = (
        f"other members on the ablated rows {parts['other_members']:.2f} (forest + SVM replayed; through "
        f"onnxruntime: {parts['other_members_onnxruntime']:.2f}), "
        if parts["rows_per_record"] > 1
        else ""
    )
    print(
        f"  where explain's CPU time goes (mean ms): {others}TreeSHAP {parts['treeshap']:.2f}, the rest "
        f"{parts['rest']:.2f} of {parts['explain']:.2f}; {parts['rows_per_record']:.1f} rows per record "
        "(itself + varied)"
    )
    before = previous_path(task, rows[:200]) if parts["replayed"] else None
    if before:
        o, n = before["onnxruntime_cpu_ms"], before["replay_cpu_ms"]
        print(
            f"  previous path (onnxruntime ablation) against the replay, alternating records: CPU p50 {o['p50']:.2f} "
            f"-> {n['p50']:.2f} ms, p99 {o['p99']:.2f} -> {n['p99']:.2f} ms; largest difference in the answers "
            f"{before['max_abs_difference']:.1e}"
        )
    store(
        args.app,
        {
            "version": pred.run.version,
            "method": ex["method"],
            "records": len(rows),
            "explain_ms": e,
            "predict_ms": p,
            "explain_cpu_ms": ce,
            "predict_cpu_ms": cp,
            "explain_cpu_parts_ms": parts,
            "previous_path": before,
            "load_before": load_before,
            "load_after": load_after,
            "cores": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d"),
        },
    )


if __name__ == "__main__":
    main()
