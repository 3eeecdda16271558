"""What luodi adds in front of an OpenAI-compatible upstream (issue 20: at most 2 ms p50).

    python bench/upstream.py                     # both upstreams, 200 pairs each (~2 minutes on 2 cores)
    python bench/upstream.py --pairs 400 --only instant

Two upstreams, each measured the same way:
  * `model`: a real `luodi serve` on the bundled model (llama.cpp), auth off, as a vLLM or Ollama would be;
  * `instant`: a minimal OpenAI-compatible server (a raw asyncio HTTP responder in its own process) that answers
    a fixed chat completion at once, so the difference is luodi's own cost, not the model's noise.
In front of each, `luodi serve --engine openai --upstream URL` with everything a deployment has on: API keys
(auth on), per-key rate limits, /metrics, the audit log and the body limit. One client process (the official
`openai` client, non-streamed chat completions, the same prompt, max_tokens 1, temperature 0) alternates a direct
call to the upstream with a call through the front, `--pairs` times after a warm-up, and prints p50 / p95 of both,
the added p50 (p50 through the front - p50 direct) and the median of the per-pair differences, against the goal.
The front's own CPU per request (its process's user and kernel CPU time / requests) is printed beside it, and
then, for `--pairs / 2` streamed pairs, the time to the first text event direct and through the front. luodi's
floor (what any /v1/ call costs the front without an upstream: GET /v1/models/{id}) is measured beside them. Stored in
bench/results/upstream.json (goals: [{goal, value, target, op, met, note}]).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import openai
from record import machine, save
from serve import free_port, start, stop

GOAL_MS = 2.0
MODEL = "bundled:smollm2-135m-instruct"
MESSAGES = [{"role": "user", "content": "Say hello."}]


# ------------------------------------------------------------------------------------------ the instant upstream
def instant_server(port: int) -> None:
    """A minimal OpenAI-compatible upstream: GET /v1/models and POST /v1/chat/completions answered at once."""
    completion = json.dumps({
        "id": "chatcmpl-instant", "object": "chat.completion", "created": 0, "model": "instant",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10},
    }).encode()
    chunk = {"id": "chatcmpl-instant", "object": "chat.completion.chunk", "created": 0, "model": "instant"}
    events = [
        {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hello"}, "finish_reason": None}]},
        {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]},
        {**chunk, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}},
    ]
    sse = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    models = json.dumps({"object": "list",
                         "data": [{"id": "instant", "object": "model", "owned_by": "bench"}]}).encode()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                request = await reader.readexactly(length) if length else b""
                body = models if head.startswith(b"GET /v1/models") else completion
                kind = b"application/json"
                if b'"stream":true' in request.replace(b" ", b""):
                    body, kind = sse, b"text/event-stream"
                status = b"200 OK" if head.startswith((b"GET /v1/models", b"POST /v1/chat/completions")) else b"404 X"
                if head.startswith(b"GET /health"):
                    status, body = b"200 OK", b"{}"
                writer.write(b"HTTP/1.1 " + status + b"\r\ncontent-type: " + kind + b"\r\ncontent-length: "
                             + str(len(body)).encode() + b"\r\n\r\n" + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# ------------------------------------------------------------------------------------------ measuring
def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process and its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def measure(direct: openai.OpenAI, front: openai.OpenAI, model: str, pairs: int, warmup: int, front_pid: int
            ) -> dict:
    def call(c: openai.OpenAI) -> float:
        t = time.perf_counter()
        r = c.chat.completions.create(model=model, messages=MESSAGES, max_tokens=1, temperature=0)
        dt = time.perf_counter() - t
        assert r.choices, r
        return dt * 1000

    for _ in range(warmup):
        call(direct)
        call(front)
    d, f = [], []
    user0, sys0 = cpu_seconds(front_pid)
    for i in range(pairs):  # alternate which goes first, so neither always follows the other
        if i % 2:
            d.append(call(direct))
            f.append(call(front))
        else:
            f.append(call(front))
            d.append(call(direct))
    user1, sys1 = cpu_seconds(front_pid)
    user, system = (user1 - user0) / pairs * 1000, (sys1 - sys0) / pairs * 1000
    diffs = [b - a for a, b in zip(d, f, strict=True)]

    def first_event(c: openai.OpenAI) -> float:
        t = time.perf_counter()
        dt = float("nan")
        stream = c.chat.completions.create(model=model, messages=MESSAGES, max_tokens=1, temperature=0, stream=True)
        with stream:
            for event in stream:
                if event.choices and event.choices[0].delta.content and dt != dt:
                    dt = time.perf_counter() - t
        return dt * 1000

    floor = []  # luodi's own cost of any /v1/ call (auth, rate limit, metrics, audit, uvicorn, FastAPI): no upstream
    user0, sys0 = cpu_seconds(front_pid)
    for _ in range(pairs):
        t = time.perf_counter()
        front.models.retrieve(model)
        floor.append((time.perf_counter() - t) * 1000)
    user1, sys1 = cpu_seconds(front_pid)
    floor_cpu = ((user1 - user0) + (sys1 - sys0)) / pairs * 1000

    sd, sf = [], []
    for i in range(pairs // 2):  # streamed: time to the first text event
        for c, out in ((direct, sd), (front, sf)) if i % 2 else ((front, sf), (direct, sd)):
            out.append(first_event(c))
    return {
        "front_floor": {"route": "GET /v1/models/{id} (answered by the front, no upstream call)",
                        "p50_ms": round(statistics.median(floor), 3), "cpu_ms_per_request": round(floor_cpu, 3)},
        "stream_first_event_ms": {"direct_p50": round(statistics.median(sd), 3),
                                  "front_p50": round(statistics.median(sf), 3),
                                  "added_p50": round(statistics.median(sf) - statistics.median(sd), 3),
                                  "pairs": len(sd)},
        "pairs": pairs,
        "direct_ms": {"p50": round(statistics.median(d), 3), "p95": round(pct(d, 95), 3)},
        "front_ms": {"p50": round(statistics.median(f), 3), "p95": round(pct(f, 95), 3)},
        "added_p50_ms": round(statistics.median(f) - statistics.median(d), 3),
        "added_p95_ms": round(pct(f, 95) - pct(d, 95), 3),
        "median_pair_difference_ms": round(statistics.median(diffs), 3),
        "front_cpu_ms_per_request": round(user + system, 3),
        "front_cpu_user_ms": round(user, 3),
        "front_cpu_system_ms": round(system, 3),  # the kernel: loopback sends and receives, epoll
    }


def front_key(home: Path) -> str:
    """An API key in the front's store (the front runs with auth on, as deployed)."""
    os.environ["LUODI_HOME"] = str(home)
    from luodi.keys import create_key
    from luodi.settings import reset_settings

    reset_settings()
    return create_key("bench-upstream").key


def run_one(kind: str, work: Path, pairs: int, warmup: int) -> dict:
    luodi_bin = shutil.which("luodi") or str(Path(sys.executable).parent / "luodi")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LUODI_HOME": str(work / "home")}
    procs = []
    try:
        port = free_port()
        if kind == "model":
            up = start([luodi_bin, "serve", "--port", str(port), "--no-key"], {**env, "LUODI_AUTH": "off"},
                       f"http://127.0.0.1:{port}/health", work / "upstream-model.log")
            model = MODEL
        else:
            up = start([sys.executable, __file__, "--serve-instant", str(port)], env,
                       f"http://127.0.0.1:{port}/health", work / "upstream-instant.log")
            model = "instant"
        procs.append(up)
        upstream = f"http://127.0.0.1:{port}/v1"
        fport = free_port()
        fr = start([luodi_bin, "serve", "--engine", "openai", "--upstream", upstream, "--port", str(fport), "--no-key"],
                   {**env, "LUODI_AUTH": "on", "LUODI_HOME": str(work / "front-home")},
                   f"http://127.0.0.1:{fport}/health", work / f"front-{kind}.log")
        procs.append(fr)
        key = front_key(work / "front-home")
        health = httpx.get(f"http://127.0.0.1:{fport}/health").json()
        assert health["engine"]["backend"] == "openai", health
        with openai.OpenAI(base_url=upstream, api_key="none", max_retries=0, timeout=60) as direct, \
                openai.OpenAI(base_url=f"http://127.0.0.1:{fport}/v1", api_key=key, max_retries=0, timeout=60) as front:
            out = measure(direct, front, model, pairs, warmup, fr.pid)
        metrics = httpx.get(f"http://127.0.0.1:{fport}/metrics").text
        out["front_counted_requests"] = sum(
            float(line.split()[-1]) for line in metrics.splitlines()
            if line.startswith("luodi_requests_total") and "/v1/chat/completions" in line and 'status="200"' in line)
        return out
    finally:
        for p in reversed(procs):
            stop(p)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=200, help="direct / through-the-front call pairs per upstream")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--only", choices=["model", "instant"], help="measure one upstream only")
    ap.add_argument("--serve-instant", type=int, metavar="PORT", help=argparse.SUPPRESS)
    ap.add_argument("--no-save", action="store_true", help="print only; keep bench/results/upstream.json")
    args = ap.parse_args()
    if args.serve_instant:
        return instant_server(args.serve_instant)
    load_before = round(os.getloadavg()[0], 2)
    results, goals = {}, []
    for kind in ([args.only] if args.only else ["instant", "model"]):
        with tempfile.TemporaryDirectory(prefix=f"luodi-bench-upstream-{kind}-") as tmp:
            r = results[kind] = run_one(kind, Path(tmp), args.pairs, args.warmup)
        what = "the bundled model (luodi serve, llama.cpp)" if kind == "model" else "an instant stub"
        print(f"\nupstream = {what}: {r['pairs']} pairs, max_tokens 1, non-streamed")
        print(f"  direct        p50 {r['direct_ms']['p50']:8.3f} ms   p95 {r['direct_ms']['p95']:8.3f} ms")
        print(f"  through luodi p50 {r['front_ms']['p50']:8.3f} ms   p95 {r['front_ms']['p95']:8.3f} ms")
        print(f"  added p50 {r['added_p50_ms']:.3f} ms (goal <= {GOAL_MS} ms: "
              f"{'met' if r['added_p50_ms'] <= GOAL_MS else 'NOT met'}); median pair difference "
              f"{r['median_pair_difference_ms']:.3f} ms; front CPU {r['front_cpu_ms_per_request']:.3f} ms/request "
              f"(user {r['front_cpu_user_ms']:.3f}, kernel {r['front_cpu_system_ms']:.3f})")
        fl = r["front_floor"]
        print(f"  luodi's floor, {fl['route']}: p50 {fl['p50_ms']:.3f} ms, front CPU {fl['cpu_ms_per_request']:.3f} "
              "ms/request")
        st = r["stream_first_event_ms"]
        print(f"  streamed, first text event: direct p50 {st['direct_p50']:.3f} ms, through luodi p50 "
              f"{st['front_p50']:.3f} ms, added {st['added_p50']:.3f} ms ({st['pairs']} pairs)")
        goals.append({
            "goal": f"added latency p50 in front of {what} (ms)", "value": r["added_p50_ms"], "target": GOAL_MS,
            "op": "<=", "met": r["added_p50_ms"] <= GOAL_MS,
            "note": f"{r['pairs']} alternating pairs, official openai client, max_tokens 1; direct p50 "
                    f"{r['direct_ms']['p50']} ms, through luodi p50 {r['front_ms']['p50']} ms; median pair difference "
                    f"{r['median_pair_difference_ms']} ms; front CPU {r['front_cpu_ms_per_request']} ms/request "
                    f"(user {r['front_cpu_user_ms']}, kernel {r['front_cpu_system_ms']}; keys, rate limit, metrics, "
                    f"audit log on); 1-min load average {load_before} on {os.cpu_count()} cores",
        })
        goals.append({"goal": f"added latency p95 in front of {what} (ms)", "value": r["added_p95_ms"],
                      "target": None, "op": None, "met": None, "note": "measured beside the goal"})
        goals.append({"goal": f"added time to the first streamed text event p50, in front of {what} (ms)",
                      "value": st["added_p50"], "target": None, "op": None, "met": None,
                      "note": f"measured beside the goal; {st['pairs']} pairs; direct p50 {st['direct_p50']} ms, "
                              f"through luodi p50 {st['front_p50']} ms"})
    m = machine()
    m["load_average_before"] = load_before
    print(f"\nmachine: {m['cores']} cores, load average {load_before} -> {m['load_average']}")
    if not args.no_save:
        path = save("upstream", {"results": results, "machine": m, "goals": goals,
                                 "command": "python bench/upstream.py " + " ".join(sys.argv[1:])})
        print(f"stored {path}")


if __name__ == "__main__":
    main()
