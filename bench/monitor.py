"""Operating served apps (issue 20, luodi.monitor): what the prediction log costs a request, and how far drift
scores sit from their threshold.

    python bench/monitor.py [--requests 400] [--no-save]

Trains the same small German Credit app twice (LightGBM, 40 trees), once with the prediction log on (serve.log
sample 1.0) and once off (sample 0), serves both in one in-process server (FastAPI TestClient, auth off) and sends
single-record predictions to each in turn, the same records, `--requests` each: the log's cost is the difference of
their median latencies. Also timed: the request path's part of it (luodi.monitor.log_predictions, a queue put),
the background writer's rows per second, and `luodi monitor` over 10,000 logged rows. Drift: the largest feature
PSI of the 160 validation applicants as they are, and with duration x3, credit amount x4, age +30; text: the
centroid distance of 200 unseen banking77 questions and of 200 news sentences against 2,000 banking77 questions.
Stored in bench/results/monitor.json (record.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml
from record import machine, save

ROOT = Path(__file__).resolve().parents[1]
OVERHEAD_MS = 0.5  # goal: logging adds at most this to a single-record request's median latency


def app_file(folder: Path, name: str, sample: float) -> Path:
    cfg = yaml.safe_load((ROOT / "examples" / "credit-risk.yaml").read_text())
    cfg.update(name=name, model={"type": "lightgbm", "options": {"n_estimators": 40, "num_leaves": 7}},
               train={"epochs": 2, "seed": 0}, serve={"batch_size": 32, "log": {"sample": sample}})
    cfg["data"]["path"] = str(Path(os.environ.get("LUODI_DATASETS", ROOT.parent / "shared" / "datasets"))
                              / "german-credit" / "german.data")
    cfg["evaluate"] = {"metrics": ["roc_auc"]}
    p = folder / f"{name}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def text_drift() -> tuple[float, float]:
    """Text drift scores against 2,000 banking77 questions: 200 other questions, 200 news sentences."""
    import numpy as np
    import pandas as pd

    from luodi.embeddings import get_encoder
    from luodi.monitor.drift import build_reference, score_feature

    data = Path(os.environ.get("LUODI_DATASETS", ROOT.parent / "shared" / "datasets"))
    texts = pd.read_csv(data / "banking77" / "train.csv").text.tolist()
    pick = np.random.default_rng(0).permutation(len(texts))
    encode = get_encoder().encode
    ref = build_reference({"text": [texts[i] for i in pick[:2000]]}, 10, encode)["features"]["text"]
    sentences, words = [], []
    for line in (data / "conll2003" / "eng.train").read_text().splitlines():
        if line.strip() and not line.startswith("-DOCSTART"):
            words.append(line.split()[0])
        elif words:
            sentences.append(" ".join(words))
            words = []
    news = [s for s in sentences if len(s.split()) >= 6][:200]
    return (score_feature(ref, [texts[i] for i in pick[2000:2200]], encode)[0], score_feature(ref, news, encode)[0])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=400, help="single-record requests per app")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("LUODI_HOME", tempfile.mkdtemp(prefix="luodi-bench-monitor-"))
    from fastapi.testclient import TestClient

    from luodi import api
    from luodi.monitor import monitor, predlog
    from luodi.monitor.drift import build_reference, score_feature
    from luodi.serve.app import create_app
    from luodi.settings import get_settings

    folder = Path(tempfile.mkdtemp(prefix="luodi-bench-monitor-apps-"))
    for name, sample in (("bench-log", 1.0), ("bench-nolog", 0.0)):
        api.train(app_file(folder, name, sample), progress=False)
    pred = api.load_predictor("bench-log")
    train, valid = pred.task.split(pred.task.read(None))
    records = valid.drop(columns=["risk"]).to_dict("records")
    lat: dict[str, list[float]] = {"bench-log": [], "bench-nolog": []}
    with TestClient(create_app(get_settings().model_copy(update={"auth": "off"}), preload=False)) as c:
        for name in lat:  # warm up: loaded, typed route, first batch
            for r in records[:20]:
                c.post(f"/v1/apps/{name}/predict", json=r)
        for i in range(args.requests):
            r = records[i % len(records)]
            for name in (("bench-log", "bench-nolog") if i % 2 else ("bench-nolog", "bench-log")):
                t = time.perf_counter()
                assert c.post(f"/v1/apps/{name}/predict", json=r).status_code == 200
                lat[name].append((time.perf_counter() - t) * 1000)
    p50 = {k: statistics.median(v) for k, v in lat.items()}
    overhead = p50["bench-log"] - p50["bench-nolog"]

    outs = pred.predict(records[:1])
    n = 20_000
    t = time.perf_counter()
    for _ in range(n):
        predlog.log_predictions(pred, records[:1], outs, 0.001)
    put_us = (time.perf_counter() - t) / n * 1e6
    t = time.perf_counter()
    written = predlog.WRITER.flush()
    rows_per_s = written / (time.perf_counter() - t)
    t = time.perf_counter()
    rep = monitor("bench-log", limit=10_000)
    monitor_s = time.perf_counter() - t

    cols = [c for c in records[0] if c in train.columns]
    ref = build_reference({c: train[c].tolist() for c in cols}, 10)["features"]
    moved = [{**r, "duration": r["duration"] * 3, "credit_amount": r["credit_amount"] * 4, "age": r["age"] + 30}
             for r in records]

    def worst(rows: list[dict]) -> float:
        return max(score_feature(ref[c], [r[c] for r in rows])[0] for c in ref)

    calm, drifted = worst(records), worst(moved)
    text_calm, text_news = text_drift()
    print(f"single-record predict, median of {args.requests}: log on {p50['bench-log']:.2f} ms, "
          f"off {p50['bench-nolog']:.2f} ms: the log adds {overhead:+.2f} ms")
    print(f"request path's part (log_predictions, queue put): {put_us:.1f} us; writer: {rows_per_s:,.0f} rows/s "
          f"({written} rows)")
    print(f"luodi monitor over {rep['window']['rows']} rows: {monitor_s:.2f} s")
    print(f"text drift (centroid distance): 200 banking77 questions {text_calm:.3f}, 200 news sentences "
          f"{text_news:.3f} (threshold 0.3)")
    print(f"largest feature drift score (PSI less its noise): calm {calm:.3f}, shifted {drifted:.3f} (threshold 0.2)")
    goals = [
        {"goal": "prediction log: added median latency of a single-record predict (ms)", "value": round(overhead, 3),
         "target": OVERHEAD_MS, "op": "<=", "met": overhead <= OVERHEAD_MS,
         "note": f"log on {p50['bench-log']:.2f} ms vs off {p50['bench-nolog']:.2f} ms, {args.requests} requests "
                 "each, in-process TestClient"},
        {"goal": "prediction log: request path's part per call (us)", "value": round(put_us, 1), "target": None,
         "op": None, "met": None, "note": f"background writer {rows_per_s:,.0f} rows/s (SQLite)"},
        {"goal": "drift: largest score (PSI less its noise) of 160 calm validation rows", "value": round(calm, 3),
         "target": 0.2, "op": "<", "met": calm < 0.2, "note": "German Credit, 10 quantile bins"},
        {"goal": "drift: largest score of the same rows shifted", "value": round(drifted, 3), "target": 0.2,
         "op": ">", "met": drifted > 0.2, "note": "duration x3, credit amount x4, age +30"},
        {"goal": "text drift: 200 unseen banking77 questions", "value": round(text_calm, 3), "target": 0.3,
         "op": "<", "met": text_calm < 0.3, "note": "reference: 2,000 other banking77 questions, minilm-l6"},
        {"goal": "text drift: 200 CoNLL-2003 news sentences", "value": round(text_news, 3), "target": 0.3,
         "op": ">", "met": text_news > 0.3, "note": "against the same banking77 reference"},
        {"goal": "luodi monitor over 10,000 logged rows (s)", "value": round(monitor_s, 2), "target": None,
         "op": None, "met": None, "note": "reference made earlier; SQLite"},
    ]
    for g in goals:
        mark = {True: "met", False: "MISSED", None: "measured"}[g["met"]]
        target = "" if g["target"] is None else f" (target {g['op']} {g['target']})"
        print(f"  {g['goal']}: {g['value']}{target} {mark}")
    if not args.no_save:
        data = {"goals": goals, "p50_ms": p50, "command": "python bench/monitor.py"
                + ("" if args.requests == 400 else f" --requests {args.requests}"), "machine": machine()}
        print(f"stored in {save('monitor', data)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
