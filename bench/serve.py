"""Serving benchmark: the live luodi server under concurrent streaming clients, against baselines.

    python bench/serve.py                      # everything (several minutes on 2 cores)
    python bench/serve.py --clients 1,8 --max-tokens 64 --skip-transformers --skip-native

Measured in ONE run on this machine, same GGUF, same prompts, same client code:
  * the CPU's features and the ggml CPU kernels (variant) luodi chose for it, and the self-check's cost
  * `llama-bench` tg / pp at 1 thread and at the served thread count (llama.cpp's own C++ decode speed)
  * luodi server (`luodi serve`, continuous batching) via the official openai client, stream=true
  * llama.cpp's own C++ server (`llama-server -np 16 -cb`), continuous batching, same kernels
  * luodi on a -march=native build of the same llama.cpp (portable vs native, unless --skip-native)
  * llama-cpp-python's own OpenAI server (`python -m llama_cpp.server`), when its extras are installed
  * plain transformers `generate`, one request at a time (fp32, the GGUF dequantized)
plus memory read bandwidth, the bandwidth-bound decode limit for the weights, and the server's peak RSS.
llama-bench and llama-server are built once from llama-cpp-python's vendored llama.cpp sources
(luodi.engines.llamacpp_build). Prints ratios against the goals. The machine's load is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import record

TOPICS = [
    "a brave knight",
    "a lost robot",
    "a dragon who loves tea",
    "a lighthouse keeper",
    "two rival chefs",
    "a time traveller",
    "a talking cat",
    "the last tree on Mars",
    "a pirate librarian",
    "a shy volcano",
    "a detective dog",
    "a city under the sea",
    "a clockmaker's apprentice",
    "a friendly ghost",
    "a mountain village",
    "a haunted violin",
]
GOALS = {"single": 0.9, "agg8_llama_server": 1.5, "native": 0.95, "rss_gib": 1.5}


@dataclass
class Req:
    ttft: float
    latency: float
    tokens: int

    @property
    def tpot(self) -> float:
        return (self.latency - self.ttft) / max(1, self.tokens - 1)


@dataclass
class Level:
    clients: int
    wall: float
    reqs: list[Req] = field(default_factory=list)
    profile: str = ""

    @property
    def agg(self) -> float:
        return sum(r.tokens for r in self.reqs) / self.wall

    @property
    def mean_latency(self) -> float:
        return statistics.mean(r.latency for r in self.reqs)


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_note() -> str:
    one, five, _ = os.getloadavg()
    cores = os.cpu_count() or 1
    busy = " (LOADED: other work shares the CPUs, numbers are noisy)" if one > cores else ""
    return f"load average {one:.1f}/{five:.1f} on {cores} cores{busy}"


def mem_bandwidth_gbs() -> float:
    """Single-thread sequential read bandwidth (numpy sum over a 256 MiB array), best of 5."""
    a = np.ones(64 * 2**20, dtype=np.float32)
    a.sum()
    best = min(_timed(a.sum) for _ in range(5))
    return a.nbytes / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# --------------------------------------------------------------------------------------- servers
def wait_http(url: str, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"server at {url} did not come up in {timeout:.0f}s")


def start(cmd: list[str], env: dict, health: str, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_http(health, proc)
    except Exception:
        stop(proc)
        print(log.read_text()[-3000:])
        raise
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def peak_rss_gib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


# --------------------------------------------------------------------------------------- load
async def one_request(client, model: str, topic: str, max_tokens: int, usage: bool) -> Req:
    t0 = time.perf_counter()
    ttft = None
    chunks = 0
    tokens = None
    extra = {"stream_options": {"include_usage": True}} if usage else {}
    stream = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": f"Write a long story about {topic}."}],
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        **extra,
    )
    async for ev in stream:
        if ev.choices and ev.choices[0].delta and ev.choices[0].delta.content:
            if ttft is None:
                ttft = time.perf_counter() - t0
            chunks += 1
        if getattr(ev, "usage", None):
            tokens = ev.usage.completion_tokens
    latency = time.perf_counter() - t0
    return Req(ttft if ttft is not None else latency, latency, tokens if tokens is not None else chunks)


async def run_level(
    base_url: str, model: str, clients: int, rounds: int, max_tokens: int, usage: bool
) -> Level:
    from openai import AsyncOpenAI

    # retries: llama-server closes idle keep-alive connections, and a request on a closed one fails before any token
    client = AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=2, timeout=1800, http_client=None)
    reqs: list[Req] = []

    async def worker(c: int) -> None:
        for r in range(rounds):
            topic = TOPICS[(c * rounds + r) % len(TOPICS)]
            reqs.append(await one_request(client, model, topic, max_tokens, usage))

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in range(clients)))
    level = Level(clients, time.perf_counter() - t0, reqs)
    await client.close()
    return level


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds each thread of a process has used (/proc/PID/task)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        f = stat.rsplit(")", 1)[1].split()
        out[tid] = (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    return out


def where_time_goes(before: dict[str, float], after: dict[str, float], client_cpu: float, tokens: int) -> str:
    """Per generated token: CPU of the two busiest server threads (the decode threads), of all its other threads
    (HTTP, event loop) and of the benchmark's own client process."""
    used = sorted(((after[t] - before.get(t, 0.0)) for t in after), reverse=True)
    ms = [1000 * x / max(1, tokens) for x in used]
    return (f"CPU ms/token: decode threads {ms[0]:.2f} + {ms[1] if len(ms) > 1 else 0:.2f}, "
            f"other server threads {sum(ms[2:]):.2f}, client {1000 * client_cpu / max(1, tokens):.2f}")


def drive(
    name: str, base_url: str, model: str, levels: list[int], rounds: int, max_tokens: int, usage: bool,
    pid: int | None = None,
) -> dict[int, Level]:
    asyncio.run(run_level(base_url, model, 1, 1, 8, usage))  # warm-up
    out = {}
    for n in levels:
        before, cpu0 = (thread_cpu(pid) if pid else {}), time.process_time()
        lv = asyncio.run(run_level(base_url, model, n, rounds, max_tokens, usage))
        if pid:
            lv.profile = where_time_goes(before, thread_cpu(pid), time.process_time() - cpu0,
                                         sum(r.tokens for r in lv.reqs))
        out[n] = lv
        ttft = [r.ttft for r in lv.reqs]
        tpot = [r.tpot * 1000 for r in lv.reqs]
        print(
            f"  {name:<22} {n:>3} clients  agg {lv.agg:7.1f} tok/s  mean latency {lv.mean_latency:6.2f} s  "
            f"TTFT p50/p99 {pct(ttft, 50):5.2f}/{pct(ttft, 99):5.2f} s  "
            f"TPOT p50/p99 {pct(tpot, 50):6.1f}/{pct(tpot, 99):6.1f} ms",
            flush=True,
        )
        if lv.profile:
            print(f"  {'':<22} {'':>3}          {lv.profile}", flush=True)
    return out


def single_stream(levels: dict[int, Level]) -> float:
    lv = levels.get(1)
    return 1.0 / statistics.median(r.tpot for r in lv.reqs) if lv else float("nan")


def step_cpu_ms(gguf: str, requantize: str | None = None) -> dict[int, float]:
    """CPU milliseconds of one llama_decode step holding B decode tokens (1 thread; thread CPU time, so
    other processes on the machine do not distort it). Shows how much batching can gain on this CPU."""
    import llama_cpp as L

    from luodi.engines.llamacpp import LlamaCppEngine

    e = LlamaCppEngine(gguf, threads=1, max_running=16, kv_budget_mb=64, adaptive_threads=False,
                       requantize=requantize, prefix_cache=0)
    ctx, b, mem = e._ctx, e._batch, e._mem
    for s in range(16):  # 64 prompt tokens per sequence
        for k in range(64):
            b.token[k], b.pos[k], b.n_seq_id[k], b.logits[k] = 100 + k, k, 1, 0
            b.seq_id[k][0] = s
        b.logits[63] = 1
        b.n_tokens = 64
        assert L.llama_decode(ctx, b) == 0
    out = {}
    for bs in (1, 2, 4, 8, 16):
        times = []
        for rep in range(4):
            for s in range(bs):
                b.token[s], b.pos[s], b.n_seq_id[s], b.logits[s] = 200, 64 + rep, 1, 1
                b.seq_id[s][0] = s
            b.n_tokens = bs
            t = time.thread_time()
            assert L.llama_decode(ctx, b) == 0
            times.append(time.thread_time() - t)
        out[bs] = min(times) * 1000
        for s in range(16):
            L.llama_memory_seq_rm(mem, s, 64, -1)
    e.close()
    return out


# --------------------------------------------------------------------------------------- baselines
def transformers_serial(gguf: str, threads: int, max_tokens: int, n: int = 3) -> tuple[float, float]:
    """Plain transformers generate (fp32), one request at a time: (tokens/s, seconds per request)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from luodi.models import gguf_to_hf_dir

    torch.set_num_threads(threads)
    path = gguf_to_hf_dir(gguf)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tokens, secs = 0, 0.0
    for topic in TOPICS[:n]:
        ids = tok.apply_chat_template(
            [{"role": "user", "content": f"Write a long story about {topic}."}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=max_tokens, do_sample=False)
        secs += time.perf_counter() - t0
        tokens += out.shape[1] - ids["input_ids"].shape[1]
    return tokens / secs, secs / n


# --------------------------------------------------------------------------------------- llama.cpp's own programs
def llama_cpp_tools() -> Path:
    """llama-bench and llama-server, built (once per machine) beside the portable libraries."""
    from importlib import metadata

    from luodi.engines import llamacpp_build

    version = metadata.version("llama_cpp_python")
    return llamacpp_build.build(version, ("llama-bench", "llama-server")) / "bin"


def kernels_env(variant_path: str | None) -> dict:
    """Make llama.cpp's own programs load the same CPU kernels as luodi (not the highest-scoring ones)."""
    env = dict(os.environ)
    if variant_path:
        env["GGML_BACKEND_PATH"] = variant_path
    return env


def llama_bench(bin_dir: Path, gguf: str, threads: int, variant_path: str | None) -> dict[str, float]:
    """llama-bench's tg64 and pp64 (tokens/s, mean of 3 runs)."""
    import json

    with tempfile.TemporaryDirectory() as cwd:  # no libggml-cpu-*.so in cwd or beside the program
        out = subprocess.run([str(bin_dir / "llama-bench"), "-m", gguf, "-t", str(threads), "-p", "64", "-n", "64",
                              "-r", "3", "-o", "json"], capture_output=True, text=True, cwd=cwd,
                             env=kernels_env(variant_path), timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"llama-bench exited {out.returncode}: {out.stderr[-2000:]}")
    rows = json.loads(out.stdout)
    return {("tg" if r["n_gen"] else "pp"): float(r["avg_ts"]) for r in rows}


def start_luodi(work: Path, name: str, model: str, threads: int, extra_env: dict | None = None
                ) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "LUODI_AUTH": "off", "LUODI_HOME": str(work / "home"), "HF_HUB_OFFLINE": "1",
           "LUODI_THREADS": str(threads), "LUODI_CHAT_MODEL": model, **(extra_env or {})}
    luodi_bin = shutil.which("luodi") or str(Path(sys.executable).parent / "luodi")
    proc = start([luodi_bin, "serve", "--port", str(port), "--no-key"], env, f"http://127.0.0.1:{port}/health",
                 work / f"{name}.log")
    return proc, f"http://127.0.0.1:{port}"


def engine_of(url: str) -> dict:
    return httpx.get(f"{url}/health", timeout=10).json().get("engine", {})


# --------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bundled:smollm2-135m-instruct")
    ap.add_argument("--clients", default="1,4,8,16")
    ap.add_argument("--rounds", type=int, default=2, help="requests per client at each level")
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--threads", type=int, default=None, help="decode threads for every engine (default: all cores)")
    ap.add_argument("--skip-llama-server", action="store_true", help="skip llama.cpp's C++ server baseline")
    ap.add_argument("--skip-native", action="store_true", help="skip the -march=native build comparison")
    ap.add_argument("--skip-llamacpp-python-server", action="store_true")
    ap.add_argument("--skip-transformers", action="store_true")
    ap.add_argument("--skip-micro", action="store_true", help="skip bandwidth / step-cost / in-process numbers")
    ap.add_argument("--engine", choices=("llamacpp", "vllm"), default="llamacpp",
                    help="vllm: the GPU benchmark instead (bench/serve_vllm.py; the other options go to it)")
    a, rest = ap.parse_known_args()
    if a.engine == "vllm":  # its own script (which imports this one's helpers)
        rest_args = [arg for arg in sys.argv[1:] if arg not in ("--engine", "vllm", "--engine=vllm")]
        sys.exit(subprocess.call([sys.executable, str(Path(__file__).with_name("serve_vllm.py")), *rest_args]))
    if rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")

    from luodi.engines import ggml_cpu
    from luodi.models import resolve

    gguf = resolve(a.model).path
    cores = os.cpu_count() or 1
    threads = a.threads or cores
    levels = [int(x) for x in a.clients.split(",")]
    print(f"# luodi serving benchmark — {a.model} ({Path(gguf).name}), {a.max_tokens} max tokens, "
          f"{a.rounds} requests per client, {threads} decode threads")
    print(f"# {load_note()}")
    check = ggml_cpu.prepare(gguf, threads)  # chooses (once per machine) and loads this CPU's kernels
    info = ggml_cpu.describe()
    variant = ggml_cpu.active_choice()
    variant_path = variant.path if variant else None
    print(f"CPU features: {' '.join(info['cpu_features'])}")
    print(f"ggml CPU kernels: {info['ggml_cpu_variant'] or 'built into the library'} (build has: "
          f"{', '.join(info['variants_available']) or '-'}; tried on this machine: {info['tried'] or 'n/a'})")
    print(f"self-check (child + in-process decode) in this process: {check['seconds']:.2f} s")

    bin_dir = llama_cpp_tools()
    bench = {t: llama_bench(bin_dir, gguf, t, variant_path) for t in sorted({1, threads})}
    for t, r in bench.items():
        print(f"llama-bench ({t} thread{'s' if t > 1 else ''}): tg64 {r['tg']:.1f} tok/s, pp64 {r['pp']:.1f} tok/s")

    bw = None
    if not a.skip_micro:
        bw = mem_bandwidth_gbs()
        weights = os.path.getsize(gguf)
        print(f"memory read bandwidth (numpy, 1 thread): {bw:.1f} GB/s; weights read per token ≈ "
              f"{weights / 2**20:.0f} MiB -> bandwidth-bound decode limit ≈ {bw * 1e9 / weights:.0f} tok/s per step")
        ms = step_cpu_ms(gguf)
        print("decode step CPU cost, 1 thread: "
              + ", ".join(f"B={k}: {v:.1f} ms ({k / v * 1000:.0f} tok/s/core)" for k, v in ms.items()))

    work = Path(tempfile.mkdtemp(prefix="luodi-bench-"))
    results: dict[str, dict[int, Level]] = {}
    rss = float("nan")
    try:
        proc, url = start_luodi(work, "luodi", a.model, threads)
        try:
            print(f"luodi server (continuous batching; engine: {engine_of(url)}):")
            results["luodi"] = drive("luodi", f"{url}/v1", a.model, levels, a.rounds, a.max_tokens, usage=True,
                                     pid=proc.pid)
            try:  # the default server holds the encoder too: load it before reading peak memory
                httpx.post(f"{url}/v1/embeddings", json={"model": "bundled:minilm-l6", "input": ["warm up"]},
                           timeout=300).raise_for_status()
            except httpx.HTTPError as e:
                print(f"  (encoder not loaded: {e})")
            rss = peak_rss_gib(proc.pid)
        finally:
            stop(proc)

        if not a.skip_llama_server:
            port = free_port()
            slots = max(levels)
            proc = start([str(bin_dir / "llama-server"), "-m", gguf, "--port", str(port), "-np", str(slots), "-cb",
                          "-t", str(threads), "-tb", str(threads), "-c", str(2048 * slots), "--no-webui"],
                         kernels_env(variant_path), f"http://127.0.0.1:{port}/health", work / "llama-server.log")
            try:
                print(f"llama.cpp's own C++ server (llama-server -np {slots} -cb -t {threads}, same kernels):")
                results["llama-server"] = drive("llama-server", f"http://127.0.0.1:{port}/v1", "model", levels,
                                                a.rounds, a.max_tokens, usage=True, pid=proc.pid)
            finally:
                stop(proc)

        if not a.skip_native:
            from importlib import metadata

            from luodi.engines import llamacpp_build

            native = llamacpp_build.build_native(metadata.version("llama_cpp_python"))
            proc, url = start_luodi(work, "luodi-native", a.model, threads, {"LLAMA_CPP_LIB_PATH": str(native)})
            try:
                print(f"luodi server on a -march=native build of the same llama.cpp ({native}):")
                results["luodi-native"] = drive("luodi-native", f"{url}/v1", a.model,
                                                [n for n in levels if n in (1, 8)] or levels[:1], a.rounds,
                                                a.max_tokens, usage=True)
            except RuntimeError as e:
                print(f"  native build did not serve: {e}")
            finally:
                stop(proc)

        if not a.skip_llamacpp_python_server:
            llamacpp_python_server(work, gguf, threads, levels, a, results, variant_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    tf = None
    if not a.skip_transformers:
        tf = transformers_serial(gguf, threads, a.max_tokens)
        print(f"transformers generate, one request at a time: {tf[0]:.1f} tok/s, {tf[1]:.2f} s per request")

    summary(results, bench, threads, tf, rss, info)
    stored = {
        "machine": record.machine(), "model": a.model, "max_tokens": a.max_tokens, "rounds": a.rounds,
        "threads": threads, "ggml_cpu": info["ggml_cpu_variant"], "self_check_s": round(check["seconds"], 2),
        "llama_bench": {str(t): r for t, r in bench.items()}, "bandwidth_gbs": bw,
        "weights_mib": os.path.getsize(gguf) / 2**20, "rss_gib": rss, "goals": GOALS,
        "transformers_serial_tok_s": tf[0] if tf else None,
        "servers": {name: {str(n): level_numbers(lv) for n, lv in lvs.items()} for name, lvs in results.items()},
        "single_stream_tok_s": single_stream(results["luodi"]),
    }
    partial = a.clients != "1,4,8,16" or any(getattr(a, f) for f in vars(a) if f.startswith("skip_"))
    if partial:
        print("not stored: only a whole run (default clients, nothing skipped) replaces bench/results/serve.json")
    else:
        print(f"stored in {record.save('serve', stored)}; docs tables: python bench/tables.py")


def level_numbers(lv: Level) -> dict[str, float]:
    """What bench/tables.py shows for one load level."""
    ttft = [r.ttft for r in lv.reqs]
    tpot = [r.tpot * 1000 for r in lv.reqs]
    return {"agg_tok_s": lv.agg, "mean_latency_s": lv.mean_latency, "ttft_p50_s": pct(ttft, 50),
            "ttft_p99_s": pct(ttft, 99), "tpot_p50_ms": pct(tpot, 50), "tpot_p99_ms": pct(tpot, 99)}


def llamacpp_python_server(work: Path, gguf: str, threads: int, levels: list[int], a, results: dict,
                           variant_path: str | None) -> None:
    try:
        import llama_cpp.server.app  # noqa: F401  (needs llama-cpp-python[server] extras)
    except ImportError as e:
        print(f"llama-cpp-python server: skipped ({e}; pip install starlette-context)")
        return
    port = free_port()
    proc = start([sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--port", str(port), "--n_threads",
                  str(threads), "--n_threads_batch", str(threads), "--n_ctx", "2048", "--verbose", "false",
                  "--interrupt_requests", "false"], kernels_env(variant_path),
                 f"http://127.0.0.1:{port}/v1/models", work / "llamacpp.log")
    try:
        print("llama-cpp-python OpenAI server (same GGUF, same kernels):")
        results["llama_cpp.server"] = drive("llama_cpp.server", f"http://127.0.0.1:{port}/v1", "model", levels,
                                            a.rounds, a.max_tokens, usage=False)
    finally:
        stop(proc)


def summary(results: dict, bench: dict, threads: int, tf, rss: float, info: dict) -> None:
    print(f"\n# summary ({load_note()}; CPU kernels {info['ggml_cpu_variant']}; {threads} decode threads)")
    lu = results["luodi"]
    single = single_stream(lu)
    tg = bench[threads]["tg"]
    print(f"single-stream decode: luodi served {single:.1f} tok/s vs llama-bench tg {tg:.1f} tok/s at {threads} "
          f"threads -> {single / tg:.2f}x (goal >= {GOALS['single']}x)")
    ls = results.get("llama-server")
    if ls and 8 in lu and 8 in ls:
        r = lu[8].agg / ls[8].agg
        lower = lu[8].mean_latency < ls[8].mean_latency
        print(f"8 clients: luodi {lu[8].agg:.1f} tok/s, mean latency {lu[8].mean_latency:.2f} s vs llama-server "
              f"{ls[8].agg:.1f} tok/s, {ls[8].mean_latency:.2f} s -> {r:.2f}x throughput "
              f"(goal >= {GOALS['agg8_llama_server']}x), latency {'lower' if lower else 'NOT lower'}")
    nat = results.get("luodi-native")
    if nat:
        for n in sorted(set(nat) & set(lu)):
            print(f"portable vs native build, {n} client{'s' if n > 1 else ''}: {lu[n].agg:.1f} vs "
                  f"{nat[n].agg:.1f} tok/s -> {lu[n].agg / nat[n].agg:.2f}x (goal >= {GOALS['native']}x)")
    lc = results.get("llama_cpp.server")
    if lc and 8 in lu and 8 in lc:
        print(f"8 clients vs llama-cpp-python's server: {lu[8].agg / lc[8].agg:.2f}x throughput, mean latency "
              f"{lu[8].mean_latency:.2f} s vs {lc[8].mean_latency:.2f} s")
    if tf and 8 in lu:
        print(f"8 clients vs transformers serial: {lu[8].agg / tf[0]:.1f}x throughput")
    print(f"peak RSS of the luodi server (chat model + encoder): {rss:.2f} GiB (goal <= {GOALS['rss_gib']} GiB)")


if __name__ == "__main__":
    main()
