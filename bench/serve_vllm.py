"""Serving on a GPU: luodi on its vllm engine against vLLM's own OpenAI server and llama.cpp's CUDA server.

    python bench/serve.py --engine vllm               # same as python bench/serve_vllm.py
    python bench/serve_vllm.py --clients 1,16,64 --rounds 2 --max-tokens 128

Measured in ONE run on one GPU, same model, same prompts, same client code (bench/serve.py's): raw vLLM
(`python -m vllm.entrypoints.openai.api_server`), `luodi serve --engine vllm` (which starts the same server and
forwards to it), and llama.cpp's `llama-server` built with CUDA from the same sources luodi compiles for CPUs.
Goals (issue 20): luodi within 10 % of raw vLLM's throughput at 64 concurrent requests, >= 5x llama.cpp's CUDA
build, p95 time to first token <= 1 s. Without vLLM or a CUDA GPU it says why and stores nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import record
import serve as bench  # bench/serve.py: the client, the load levels and the process helpers

GOALS = {"vs_raw_vllm": 0.9, "vs_llamacpp_cuda": 5.0, "ttft_p95_s": 1.0}


def llama_server_cuda() -> tuple[Path | None, str]:
    """llama-server built with CUDA (once per machine), or None and why not."""
    from importlib import metadata

    from luodi.engines import llamacpp_build

    try:
        return llamacpp_build.build_cuda_server(metadata.version("llama_cpp_python")), ""
    except (RuntimeError, SystemExit, OSError) as e:
        return None, str(e)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bundled:smollm2-135m-instruct")
    ap.add_argument("--clients", default="1,16,64")
    ap.add_argument("--rounds", type=int, default=2, help="requests per client at each level")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--skip-llamacpp-cuda", action="store_true", help="skip llama.cpp's CUDA server baseline")
    a = ap.parse_args(argv)

    from luodi.engines.choice import why_not
    from luodi.engines.vllm import free_port, vllm_command
    from luodi.models import hf_model_dir, resolve

    reason = why_not()
    if reason is not None:
        print(f"not measured: the vllm engine cannot run here: {reason}")
        return 0
    levels = [int(x) for x in a.clients.split(",")]
    top = max(levels)
    print(f"# luodi on vLLM — {a.model}, {a.max_tokens} max tokens, {a.rounds} requests per client")
    print(f"# {bench.load_note()}")
    work = Path(tempfile.mkdtemp(prefix="luodi-bench-vllm-"))
    results: dict[str, dict[int, bench.Level]] = {}
    notes: dict[str, str] = {}
    try:
        port = bench.free_port()
        cmd = vllm_command(hf_model_dir(a.model, "the vllm engine"), a.model, port, n_ctx=2048, tool_parser="")
        proc = bench.start(cmd, dict(os.environ), f"http://127.0.0.1:{port}/health", work / "vllm.log")
        try:
            print(f"vLLM's own OpenAI server ({' '.join(cmd[1:4])} ...):")
            results["vllm"] = bench.drive("vllm", f"http://127.0.0.1:{port}/v1", a.model, levels, a.rounds,
                                          a.max_tokens, usage=True)
        finally:
            bench.stop(proc)

        proc, url = bench.start_luodi(work, "luodi-vllm", a.model, 1, {"LUODI_ENGINE": "vllm"})
        try:
            print(f"luodi server on the vllm engine ({bench.engine_of(url)}):")
            results["luodi-vllm"] = bench.drive("luodi-vllm", f"{url}/v1", a.model, levels, a.rounds,
                                                a.max_tokens, usage=True)
        finally:
            bench.stop(proc)

        if not a.skip_llamacpp_cuda:
            bin_dir, why = llama_server_cuda()
            if bin_dir is None:
                notes["llamacpp_cuda"] = f"not measured: {why}"
                print(f"llama.cpp CUDA server {notes['llamacpp_cuda']}")
            else:
                port = free_port()
                gguf = resolve(a.model).path
                proc = bench.start([str(bin_dir / "llama-server"), "-m", gguf, "--port", str(port), "-np", str(top),
                                    "-cb", "-ngl", "999", "-c", str(2048 * top), "--no-webui"],
                                   dict(os.environ), f"http://127.0.0.1:{port}/health",
                                   work / "llama-server-cuda.log")
                try:
                    print(f"llama.cpp's C++ server, CUDA build (-np {top} -cb -ngl 999):")
                    results["llama-server-cuda"] = bench.drive("llama-server-cuda", f"http://127.0.0.1:{port}/v1",
                                                               "model", levels, a.rounds, a.max_tokens, usage=True)
                finally:
                    bench.stop(proc)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    goals = judged(results, top, notes)
    for g in goals:
        mark = {True: "met", False: "MISSED", None: "not measured"}[g["met"]]
        print(f"{g['goal']:<70} {g['value'] if g['value'] is not None else '-':>10}  {g['op']} {g['target']}  {mark}"
              f"  {g['note']}")
    stored = {"machine": record.machine(), "gpu": gpu_name(), "model": a.model, "max_tokens": a.max_tokens,
              "rounds": a.rounds, "goals": goals, "notes": notes,
              "servers": {n: {str(c): bench.level_numbers(lv) for c, lv in lvs.items()} for n, lvs in results.items()}}
    print(f"stored in {record.save('serve_vllm', stored)}")
    return 0


def judged(results: dict[str, dict[int, bench.Level]], top: int, notes: dict[str, str]) -> list[dict]:
    """The three goals at the highest concurrency measured."""
    luodi, raw = results["luodi-vllm"][top], results["vllm"][top]
    cuda = results.get("llama-server-cuda", {}).get(top)
    ttft95 = bench.pct([r.ttft for r in luodi.reqs], 95)

    def goal(text: str, value: float | None, op: str, target: float, note: str) -> dict:
        met = None if value is None else (value >= target if op == ">=" else value <= target)
        return {"goal": text, "value": None if value is None else round(value, 3), "op": op, "target": target,
                "met": met, "note": note}

    return [
        goal(f"luodi-on-vLLM / raw vLLM throughput at {top} concurrent", luodi.agg / raw.agg, ">=",
             GOALS["vs_raw_vllm"], f"{luodi.agg:.0f} vs {raw.agg:.0f} tok/s"),
        goal(f"luodi-on-vLLM / llama.cpp CUDA build throughput at {top} concurrent",
             luodi.agg / cuda.agg if cuda else None, ">=", GOALS["vs_llamacpp_cuda"],
             f"{luodi.agg:.0f} vs {cuda.agg:.0f} tok/s" if cuda else notes.get("llamacpp_cuda", "skipped")),
        goal(f"luodi-on-vLLM p95 time to first token at {top} concurrent (s)", ttft95, "<=", GOALS["ttft_p95_s"],
             f"p50 {bench.pct([r.ttft for r in luodi.reqs], 50):.3f} s"),
    ]


def gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"


if __name__ == "__main__":
    sys.exit(main())
