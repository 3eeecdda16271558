"""docs/benchmarks.md's tables come from bench/results/*.json: they are in sync, and render what is stored."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import record  # noqa: E402
import tables  # noqa: E402


def test_docs_tables_match_the_stored_results():
    r = subprocess.run([sys.executable, str(BENCH / "tables.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr + r.stdout
    docs = "".join(d.read_text() for d in tables.DOCS)
    for name in tables.BLOCKS:
        assert f"<!-- begin: {name} -->" in docs and f"<!-- end: {name} -->" in docs


def level(agg: float, latency: float) -> dict[str, float]:
    return {"agg_tok_s": agg, "mean_latency_s": latency, "ttft_p50_s": 0.1, "ttft_p99_s": 0.2,
            "tpot_p50_ms": 8.0, "tpot_p99_ms": 9.0}


def test_tables_render_the_stored_numbers_and_their_ratios(tmp_path):
    machine = {"cpu": "Test CPU", "cpu_features": ["avx2"], "cores": 2, "load_average": 0.5, "date": "2026-01-01"}
    record.save("serve", {
        "machine": machine, "model": "m", "max_tokens": 96, "rounds": 2, "threads": 2, "ggml_cpu": "haswell",
        "self_check_s": 0.7, "llama_bench": {"2": {"tg": 100.0, "pp": 300.0}}, "bandwidth_gbs": None,
        "weights_mib": 94.0, "rss_gib": 0.9, "transformers_serial_tok_s": 15.0,
        "goals": {"single": 0.9, "agg8_llama_server": 1.5, "native": 0.95, "rss_gib": 1.5},
        "servers": {"luodi": {"1": level(95.0, 0.8), "8": level(180.0, 4.0)},
                    "llama-server": {"8": level(200.0, 3.5)}},
        "single_stream_tok_s": 95.0,
    }, tmp_path)
    record.save("apps_batching", {"machine": machine, "requests": 400, "concurrency": 32, "apps": {
        "diagnosis": {"alone": {"batch_size": 1, "req_per_s": 100.0, "mean_ms": 300.0},
                      "batched": {"batch_size": 64, "req_per_s": 250.0, "mean_ms": 120.0}}}}, tmp_path)
    doc = ("# t\n<!-- begin: serve -->\nold\n<!-- end: serve -->\n"
           "<!-- begin: apps_batching -->\n<!-- end: apps_batching -->\n")
    out = tables.render(doc, tmp_path)
    assert "old" not in out
    assert "**0.95x** (95.0 vs 100.0 tok/s)" in out  # single stream vs llama-bench
    assert "**0.90x** (180.0 vs 200.0 tok/s)" in out  # 8 clients vs llama-server
    assert "**12.00x**" in out  # 180 tok/s vs transformers' 15
    assert "**2.50x**" in out and "Test CPU" in out
    assert "No stored run yet" in tables.render("<!-- begin: rag -->\n<!-- end: rag -->", tmp_path)


def test_an_unknown_block_is_an_error_naming_it(tmp_path):
    with pytest.raises(SystemExit, match="unknown generated block 'nope'"):
        tables.render("<!-- begin: nope -->\n<!-- end: nope -->\n", tmp_path)


def test_the_trust_table_shows_every_part_s_goals_and_misses(tmp_path):
    record.save("fairness", {"goals": [
        {"goal": "income DP difference", "value": 0.006, "target": 0.02, "op": "<=", "met": True, "note": "a"},
        {"goal": "income loss (pt)", "value": 2.43, "target": 1.0, "op": "<=", "met": False, "note": "LP | bound"},
    ]}, tmp_path)
    record.save("audit_pages", {"goals": [{"goal": "income page", "value": 3, "target": None, "op": None,
                                           "met": True, "note": ""}]}, tmp_path)
    out = tables.render("<!-- begin: trust -->\n<!-- end: trust -->\n", tmp_path)
    assert "| fairness | income DP difference | 0.006 | <= 0.02 | met | a |" in out
    assert "| fairness | income loss (pt) | 2.43 | <= 1.0 | **missed** | LP / bound |" in out
    assert "| audit | income page | 3 | - | met |" in out
    assert [r["part"] for r in tables.goal_rows(tmp_path)] == ["fairness", "fairness", "audit"]
    record.save("dp", {"goals": [{"goal": "MNIST at epsilon 3", "value": 0.922, "target": 0.95, "op": ">=",
                                  "met": False, "note": "n"}]}, tmp_path)
    privacy = tables.render("<!-- begin: privacy -->\n<!-- end: privacy -->\n", tmp_path)
    assert "| dp | MNIST at epsilon 3 | 0.922 | >= 0.95 | **missed** | n |" in privacy
    assert "income DP difference" not in privacy  # issue 19's parts stay in their own table
