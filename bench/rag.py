"""Knowledge-base benchmark on SQuAD v1.1 dev: every paragraph ingested as a file, every question asked.

Prints, from one run on this machine:
- ingest throughput (documents and chunks per second, end to end: read, chunk, embed, store, index);
- retrieval quality for the paragraph holding the answer: hit@1/3/5/10 and MRR for hybrid (ours) and the
  dense-only and BM25-only baselines, with query throughput;
- the "not found" calibration: share of SQuAD questions kept vs. off-topic questions (CLINC150) and
  questions whose article is absent from the KB that are refused, per threshold on the best cosine;
- a sample of generated answers: citation accuracy (cited file is the gold paragraph; cited sentence
  contains a gold answer) and answer match.

    python bench/rag.py                      # everything (~10k questions)
    python bench/rag.py --articles 5 --answers 10   # a quick run (not stored)

A whole run stores its numbers in bench/results/rag.json, which docs/benchmarks.md's tables are rendered from.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=os.environ.get("LUODI_DATASETS", "../shared/datasets"))
    ap.add_argument("--articles", type=int, default=0, help="use only the first N articles (0: all 48)")
    ap.add_argument("--answers", type=int, default=40, help="questions answered by the LLM (citation sample)")
    ap.add_argument("--home", default=None, help="LUODI_HOME for the bench KB (default: a temp dir)")
    ap.add_argument("--no-store", action="store_true",
                    help="do not store the numbers in bench/results/rag.json")
    args = ap.parse_args()
    os.environ["LUODI_HOME"] = args.home or tempfile.mkdtemp(prefix="luodi-bench-rag-")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from luodi import rag
    from luodi.embeddings import get_encoder
    from luodi.rag.eval import evaluate_answers, first_relevant_rank, retrieval_metrics
    from luodi.rag.index import load
    from luodi.rag.retrieve import rank

    squad = Path(args.datasets) / "squad-v1.1" / "dev-v1.1.json"
    if not squad.exists():
        sys.exit(f"{squad} not found: pass --datasets or set LUODI_DATASETS")
    data = json.loads(squad.read_text())["data"]
    if args.articles:
        data = data[: args.articles]
    root = Path(tempfile.mkdtemp(prefix="squad-docs-"))
    qa = []
    for art in data:
        folder = root / art["title"]
        folder.mkdir()
        for i, p in enumerate(art["paragraphs"]):
            (folder / f"p{i:03d}.txt").write_text(p["context"])
            for q in p["qas"]:
                qa.append(
                    {
                        "question": q["question"],
                        "source": f"{art['title']}/p{i:03d}.txt",
                        "answers": [a["text"] for a in q["answers"]],
                        "article": art["title"],
                    }
                )
    n_docs = sum(len(a["paragraphs"]) for a in data)
    print(
        f"SQuAD dev: {len(data)} articles, {n_docs} paragraphs, {len(qa)} questions; "
        f"{os.cpu_count()} CPU cores, torch threads {__import__('torch').get_num_threads()}"
    )
    out: dict = {"articles": len(data), "paragraphs": n_docs, "questions": len(qa)}

    enc = get_encoder()
    rag.create_kb("squad")
    t = time.perf_counter()
    rep = rag.add_documents("squad", [root], progress=True)
    dt = time.perf_counter() - t
    out["ingest"] = {
        "seconds": dt,
        "docs_per_s": len(rep.added) / dt,
        "chunks_per_s": rep.chunks / dt,
        "chunks": rep.chunks,
    }
    print(
        f"ingest: {len(rep.added)} docs, {rep.chunks} chunks in {dt:.1f}s = "
        f"{len(rep.added) / dt:.1f} docs/s, "
        f"{rep.chunks / dt:.1f} chunks/s"
    )

    kb = load("squad")
    t = time.perf_counter()
    qvecs = enc.encode([x["question"] for x in qa], progress=True)
    t_enc = time.perf_counter() - t
    print(f"question embedding: {len(qa) / t_enc:.0f} questions/s")
    rows = []
    base_rate = None
    for mode in ("hybrid", "dense", "bm25"):
        t = time.perf_counter()
        ranks = [
            first_relevant_rank(x, rank(kb, qv, x["question"], 20, mode).hits)
            for x, qv in zip(qa, qvecs, strict=True)
        ]
        dt = time.perf_counter() - t + (t_enc if mode != "bm25" else 0.0)
        m = retrieval_metrics(ranks)
        m["queries_per_s"] = len(qa) / dt
        out[mode] = m
        base_rate = base_rate or m["queries_per_s"]
        rows.append((mode, m))
    print("\n| ranking | hit@1 | hit@3 | hit@5 | hit@10 | MRR | queries/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for mode, m in rows:
        label = "hybrid (0.6 cosine + 0.4 scaled BM25)" if mode == "hybrid" else f"{mode} only (baseline)"
        print(
            f"| {label} | {m['hit@1']:.3f} | {m['hit@3']:.3f} | {m['hit@5']:.3f} | {m['hit@10']:.3f} "
            f"| {m['mrr']:.3f} | {m['queries_per_s']:.0f} |"
        )
    h, d, b = out["hybrid"], out["dense"], out["bm25"]
    print(
        f"hybrid vs dense: MRR x{h['mrr'] / d['mrr']:.3f}, hit@5 x{h['hit@5'] / d['hit@5']:.3f}; "
        f"vs BM25: MRR x{h['mrr'] / b['mrr']:.3f}, hit@5 x{h['hit@5'] / b['hit@5']:.3f}"
    )

    # --- "not found" calibration on the best cosine ---------------------------------------------
    ids = kb.chunk_ids
    mat = np.vstack([kb.vectors.reconstruct(int(i)) for i in ids]) if len(ids) else np.zeros((0, enc.dim))
    best_in = (qvecs @ mat.T).max(axis=1)
    art_of_row = np.array([Path(kb.sources[int(d)]).parent.name for d in kb.doc_ids])
    arts = np.array([x["article"] for x in qa])
    best_missing = np.empty(len(qa), dtype=np.float32)
    for a in np.unique(arts):
        qi = np.where(arts == a)[0]
        keep = art_of_row != a
        best_missing[qi] = (qvecs[qi] @ mat[keep].T).max(axis=1) if keep.any() else -1.0
    clinc = Path(args.datasets) / "clinc150" / "data_full_trainval.json"
    off = []
    if clinc.exists():
        off = [t for t, _ in json.loads(clinc.read_text())["val"]][::3]
    best_off = (enc.encode(off) @ mat.T).max(axis=1) if off else np.zeros(0)
    print(
        f"\nnot-found calibration ({len(qa)} SQuAD questions; {len(off)} off-topic CLINC150 queries; "
        "the same SQuAD questions with their article removed from the KB)"
    )
    print("| min_score | SQuAD questions answered | off-topic refused | article-missing refused |")
    print("|---:|---:|---:|---:|")
    calib = {}
    for thr in (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5):
        row = {
            "answered": float((best_in >= thr).mean()),
            "offtopic_refused": float((best_off < thr).mean()) if off else None,
            "missing_refused": float((best_missing < thr).mean()),
        }
        calib[str(thr)] = row
        offs = f"{row['offtopic_refused']:.3f}" if off else "n/a"
        print(f"| {thr:.2f} | {row['answered']:.3f} | {offs} | {row['missing_refused']:.3f} |")
    out["calibration"] = calib

    # --- generated answers with citations -----------------------------------------------------------
    if args.answers:
        rng = np.random.default_rng(0)
        sample = [qa[i] for i in rng.choice(len(qa), size=min(args.answers, len(qa)), replace=False)]
        t = time.perf_counter()
        am = evaluate_answers("squad", sample, k=3, progress=True)
        dt = time.perf_counter() - t
        am["seconds_per_answer"] = dt / len(sample)
        out["answers"] = am
        print(
            f"\nanswers on {len(sample)} random questions (bundled LLM, greedy): "
            + ", ".join(f"{k} {v:.3f}" for k, v in am.items() if isinstance(v, float))
        )
    if not args.no_store and not args.articles:  # only whole runs become the stored result
        import record

        out["machine"] = record.machine()
        print(f"stored in {record.save('rag', out)}; docs tables: python bench/tables.py")


if __name__ == "__main__":
    main()
