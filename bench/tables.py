"""Render the docs' measured tables from the stored results in bench/results/*.json.

    python bench/tables.py           # rewrite the generated blocks in docs/benchmarks.md and docs/responsible-ai.md
    python bench/tables.py --check   # exit 1 when the docs differ from bench/results (the test suite runs this)

A generated block sits between `<!-- begin: NAME -->` and `<!-- end: NAME -->`; text outside the blocks is
written by hand and holds no measured number that a bench script stores.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import record

DOCS = [Path(__file__).resolve().parents[1] / "docs" / name
        for name in ("benchmarks.md", "responsible-ai.md", "privacy.md", "optimize.md")]
DOC = DOCS[0]
BLOCK = re.compile(r"(<!-- begin: (?P<name>[a-z_]+) -->\n)(?P<body>.*?)(<!-- end: (?P=name) -->)", re.S)


def num(v: float | None, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def ratio(a: float, b: float) -> str:
    return f"**{a / b:.2f}x**" if b else "-"


def machine_line(m: dict[str, Any] | None) -> str:
    if not m:
        return ""
    feats = " ".join(m.get("cpu_features") or []) or "no AVX2"
    return (f"Measured {m['date']} on {m['cpu']} ({m['cores']} cores; {feats}), "
            f"1-minute load average {m['load_average']} when stored.\n\n")


def quality_table(rows: list[dict[str, Any]]) -> str:
    """One row per example app that bench/quality.py measured, with its goal and whether the split met it."""
    out = [
        "| case | task | dataset | goal | measured (validation split) | k-fold CV, whole dataset "
        "| default LightGBM, same split | goal met (split) | train s | ms/row batched | ms single |",
        "|---|---|---|---|---|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['case']} | {r.get('task', '-')} | {r.get('dataset', '-')} | - | error: {r['error']} "
                       "| - | - | - | - | - | - |")
            continue
        extra = ", ".join(f"{k} {v}" for k, v in (r.get("extra") or {}).items())
        measured = f"{r['metric']} {num(r['measured'])}" + (f" ({extra})" if extra else "")
        cv = r.get("cv")
        cv_text = f"{cv['folds']}-fold {cv['mean']:.4f} ± {cv['std']:.4f}" if cv else "-"
        met = {True: "yes", False: "no", None: "-"}[r["met"]]
        out.append(f"| {r['case']} | {r['task']} | {r['dataset']} | {r['goal']} | {measured} | {cv_text} "
                   f"| {num(r.get('baseline'))} | {met} | {r['train_s']} | {num(r['ms_per_row_batched'], 3)} "
                   f"| {num(r['ms_single'], 2)} |")
    return "\n".join(out) + "\n"


def quality_block(results: Path) -> str:
    rows = record.load("quality", results) or []
    return quality_table(rows) if rows else "No stored run yet: `python bench/quality.py`.\n"


def serve_block(results: Path) -> str:
    """The goals of the serving benchmark as ratios, then every server at every load level."""
    s = record.load("serve", results)
    if not s:
        return "No stored run yet: `python bench/serve.py`.\n"
    servers, goals, t = s["servers"], s["goals"], str(s["threads"])
    lu = servers["luodi"]
    tg = s["llama_bench"][t]["tg"]
    rows = [
        "| what | measured | goal |",
        "|---|---|---|",
        f"| served single-stream decode vs `llama-bench` tg, same GGUF and kernels, {t} threads "
        f"| {ratio(s['single_stream_tok_s'], tg)} ({s['single_stream_tok_s']:.1f} vs {tg:.1f} tok/s) "
        f"| ≥ {goals['single']}x |",
    ]
    ls = servers.get("llama-server", {})
    if "8" in lu and "8" in ls:
        rows.append(f"| aggregate at 8 clients vs llama.cpp's `llama-server -cb`, {t} threads "
                    f"| {ratio(lu['8']['agg_tok_s'], ls['8']['agg_tok_s'])} ({lu['8']['agg_tok_s']:.1f} vs "
                    f"{ls['8']['agg_tok_s']:.1f} tok/s), mean latency {lu['8']['mean_latency_s']:.2f} vs "
                    f"{ls['8']['mean_latency_s']:.2f} s | ≥ {goals['agg8_llama_server']}x at lower latency |")
    native = servers.get("luodi-native", {})
    for n in sorted(set(native) & set(lu), key=int):
        rows.append(f"| portable build vs a `-march=native` build, luodi serving both, {n} client(s) "
                    f"| {ratio(lu[n]['agg_tok_s'], native[n]['agg_tok_s'])} ({lu[n]['agg_tok_s']:.1f} vs "
                    f"{native[n]['agg_tok_s']:.1f} tok/s) | ≥ {goals['native']}x |")
    if s.get("transformers_serial_tok_s") and "8" in lu:
        rows.append(f"| 8 clients vs plain transformers `generate`, one request at a time "
                    f"({s['transformers_serial_tok_s']:.1f} tok/s) "
                    f"| {ratio(lu['8']['agg_tok_s'], s['transformers_serial_tok_s'])} | — |")
    rows.append(f"| start-up self-check (child + in-process decode, tokens compared) | {s['self_check_s']:.2f} s "
                "| < 2 s |")
    rows.append(f"| peak RSS of `luodi serve` with both bundled models | {s['rss_gib']:.2f} GiB "
                f"| ≤ {goals['rss_gib']} GiB |")
    if s.get("bandwidth_gbs"):
        limit = s["bandwidth_gbs"] * 1e9 / (s["weights_mib"] * 2**20)
        rows.append(f"| memory read bandwidth / bandwidth-bound decode limit ({s['weights_mib']:.0f} MiB of weights) "
                    f"| {s['bandwidth_gbs']:.1f} GB/s / ≈ {limit:.0f} tok/s per step | — |")
    levels = ["", "| server | clients | tok/s (all clients) | mean latency s | TTFT p50 / p99 s | TPOT p50 / p99 ms |",
              "|---|---:|---:|---:|---:|---:|"]
    for name, lvs in servers.items():
        for n, v in sorted(lvs.items(), key=lambda kv: int(kv[0])):
            levels.append(f"| {name} | {n} | {v['agg_tok_s']:.1f} | {v['mean_latency_s']:.2f} "
                          f"| {v['ttft_p50_s']:.2f} / {v['ttft_p99_s']:.2f} "
                          f"| {v['tpot_p50_ms']:.1f} / {v['tpot_p99_ms']:.1f} |")
    head = (f"`python bench/serve.py`: {s['model']}, {s['max_tokens']} max tokens, {s['rounds']} requests per client, "
            f"every server decoding on {t} threads, llama.cpp CPU kernels `{s['ggml_cpu']}` (chosen by trying).\n\n")
    return machine_line(s.get("machine")) + head + "\n".join(rows + levels) + "\n"


def apps_batching_block(results: Path) -> str:
    b = record.load("apps_batching", results)
    if not b:
        return "No stored run yet: `python bench/apps_batching.py`.\n"
    rows = [f"`python bench/apps_batching.py`: {b['requests']} single-record predict requests from "
            f"{b['concurrency']} concurrent clients, in-process ASGI.\n",
            "| app | each request alone: req/s, mean ms | micro-batched: batch size, req/s, mean ms | speed-up |",
            "|---|---:|---:|---:|"]
    for app, v in b["apps"].items():
        a, m = v["alone"], v["batched"]
        rows.append(f"| {app} | {a['req_per_s']:.0f}, {a['mean_ms']:.0f} ms | {m['batch_size']}, "
                    f"{m['req_per_s']:.0f}, {m['mean_ms']:.0f} ms | {ratio(m['req_per_s'], a['req_per_s'])} |")
    return machine_line(b.get("machine")) + "\n".join(rows) + "\n"


def rag_block(results: Path) -> str:
    r = record.load("rag", results)
    if not r:
        return "No stored run yet: `python bench/rag.py`.\n"
    rows = [f"`python bench/rag.py`: SQuAD v1.1 dev, {r['paragraphs']:,} paragraphs as files, {r['questions']:,} "
            f"questions; ingest {r['ingest']['docs_per_s']:.1f} docs/s ({r['ingest']['chunks']:,} chunks).\n",
            "| ranking | hit@1 | hit@3 | hit@5 | hit@10 | MRR |", "|---|---:|---:|---:|---:|---:|"]
    for mode, label in (("hybrid", "hybrid (ours)"), ("dense", "dense only"), ("bm25", "BM25 only")):
        m = r[mode]
        rows.append(f"| {label} | {m['hit@1']:.3f} | {m['hit@3']:.3f} | {m['hit@5']:.3f} | {m['hit@10']:.3f} "
                    f"| {m['mrr']:.3f} |")
    ans = r.get("answers")
    if ans:
        shown = ", ".join(f"{k} {v:.3f}" for k, v in ans.items() if isinstance(v, float) and k != "seconds_per_answer")
        n = ans.get("answered", "a sample of")
        rows.append(f"\nGenerated answers (bundled LLM, greedy, {n} questions): {shown}; "
                    f"{ans['seconds_per_answer']:.1f} s per answer.")
    return machine_line(r.get("machine")) + "\n".join(rows) + "\n"


# an issue's parts (bench/trust.py: issue 19, bench/privacy.py: issue 18) -> the result each stores; every one
# holds "goals": [{goal, value, target, op, met, note}], so one table shows them all
TRUST_PARTS = {"fairness": "fairness", "explain": "explain", "explain_media": "explain_media",
               "robustness": "robustness", "robustness_text": "robustness_text", "audit": "audit_pages"}
PRIVACY_PARTS = {"pii": "pii", "anonymize": "anonymize", "dp": "dp", "federated": "federated",
                 "encryption": "encryption", "injection": "injection"}


def goal_rows(results: Path, parts: dict[str, str] = TRUST_PARTS) -> list[dict[str, Any]]:
    """Every stored goal of the parts, in part order, each tagged with its part."""
    rows = []
    for part, name in parts.items():
        for g in (record.load(name, results) or {}).get("goals", []):
            rows.append({"part": part, **g})
    return rows


def goal_value(g: dict[str, Any]) -> str:
    v = g.get("value")
    if isinstance(v, bool) or v is None:
        return "-" if v is None else str(v).lower()
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def goals_block(results: Path, parts: dict[str, str], script: str) -> str:
    rows = goal_rows(results, parts)
    if not rows:
        return f"No stored run yet: `python bench/{script}`.\n"
    out = ["| part | goal | measured | target | met | note |", "|---|---|---:|---|---|---|"]
    for g in rows:
        target = f"{g['op']} {g['target']}" if g.get("target") is not None else "-"
        met = {True: "met", False: "**missed**", None: "-"}[g.get("met")]
        note = str(g.get("note") or "").replace("|", "/").replace("\n", " ")
        out.append(f"| {g['part']} | {g['goal']} | {goal_value(g)} | {target} | {met} | {note} |")
    stamps = sorted({f"{m['date']}, load {m['load_average']}" for name in parts.values()
                     if (m := (record.load(name, results) or {}).get("machine"))})
    head = f"`python bench/{script}` (each part's script stores bench/results/<part>.json)"
    return f"{head}; stored {'; '.join(stamps) or 'without machine info'}.\n\n" + "\n".join(out) + "\n"


TRADE_OFF = ("size_mb", "parameters", "p50_ms", "p95_ms", "rows_per_s_batch1", "rows_per_s_batch32", "quality",
             "agreement")


def trade_off_rows(label: str, table: dict[str, Any]) -> list[str]:
    """One optimize table (baseline and optimized, as `luodi optimize` measured them) as markdown rows."""
    return [f"| {label} | {name} | " + " | ".join(str(row.get(c, "")) for c in TRADE_OFF) + " |"
            for name, row in table["rows"].items()]


def optimize_block(results: Path) -> str:
    stored = record.load("optimize", results)
    if not stored:
        return "No stored run yet: `python bench/optimize.py`.\n"
    out = ["| part | goal | measured | target | met | note |", "|---|---|---:|---|---|---|"]
    for part, done in stored["parts"].items():
        for g in done.get("goals", []):
            met = {True: "met", False: "**missed**", None: "-"}[g.get("met")]
            note = str(g.get("note") or "").replace("|", "/")
            target = f"{g['op']} {g['target']}" if g.get("target") is not None else "-"
            out.append(f"| {part} | {g['goal']} | {goal_value(g)} | {target} | {met} | {note} |")
    tables = ["| run | model | " + " | ".join(TRADE_OFF) + " |", "|---|---|" + "---:|" * len(TRADE_OFF)]
    for app, runs in stored["parts"].get("intents", {}).get("detail", {}).items():
        tables += trade_off_rows(f"{app} int8", runs["int8"]) + trade_off_rows(f"{app} onnx", runs["onnx"])
    distilled = stored["parts"].get("distill", {}).get("detail", {})
    for key, label in (("student", "banking-intents distill"), ("student_int8", "banking-intents distill + int8")):
        if key in distilled:
            tables += trade_off_rows(label, distilled[key])
    if "pruned" in stored["parts"].get("prune", {}).get("detail", {}):
        tables += trade_off_rows("banking-intents prune", stored["parts"]["prune"]["detail"]["pruned"])
    if "gguf" in stored["parts"].get("gguf", {}).get("detail", {}):
        tables += trade_off_rows("dialogue-style gguf (quality: perplexity)", stored["parts"]["gguf"]["detail"]["gguf"])
    for app, runs in stored["parts"].get("families", {}).get("detail", {}).items():
        for method in ("onnx", "int8"):
            if method in runs:
                tables += trade_off_rows(f"{app} {method}", runs[method])
    stamps = sorted({f"{d['machine']['date']}, load {d['machine']['load_average']}"
                     for d in stored["parts"].values() if d.get("machine")})
    return (f"`python bench/optimize.py`; stored {'; '.join(stamps)}.\n\n" + "\n".join(out)
            + "\n\nEach `luodi optimize` table (baseline and optimized run measured in one process; quality on the "
            "validation split):\n\n" + "\n".join(tables) + "\n")


BLOCKS: dict[str, Callable[[Path], str]] = {
    "quality": quality_block, "serve": serve_block, "apps_batching": apps_batching_block, "rag": rag_block,
    "trust": lambda results: goals_block(results, TRUST_PARTS, "trust.py"),
    "privacy": lambda results: goals_block(results, PRIVACY_PARTS, "privacy.py"),
    "optimize": optimize_block,
}


def render(doc: str, results: Path = record.RESULTS) -> str:
    """The document with every generated block rendered from `results`; unknown block names are an error."""

    def fill(m: re.Match) -> str:
        name = m.group("name")
        if name not in BLOCKS:
            raise SystemExit(f"unknown generated block '{name}' (known: {', '.join(BLOCKS)})")
        return m.group(1) + BLOCKS[name](results) + m.group(4)

    return BLOCK.sub(fill, doc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check that the docs match bench/results")
    args = ap.parse_args()
    for doc in DOCS:
        text = doc.read_text()
        new = render(text)
        if args.check:
            if new != text:
                sys.exit(f"{doc} differs from bench/results: run `python bench/tables.py`")
            print(f"{doc}: generated tables match bench/results")
            continue
        doc.write_text(new)
        print(f"rendered {len(BLOCK.findall(new))} tables into {doc}")


if __name__ == "__main__":
    main()
