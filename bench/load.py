"""What Ray Serve costs luodi (issue 20, `luodi serve --ray`): throughput and p50 latency of the same app under
plain uvicorn and on Ray Serve, at 16 concurrent clients, in one run.

    python bench/load.py                         # 16 clients, 4 x 5 s per server (~1.5 minutes on 2 cores)
    python bench/load.py --clients 16 --seconds 40 --rounds 8

One private LUODI_HOME (a temporary folder) holds a tiny trained table app (LightGBM, 30 trees on scikit-learn's
breast-cancer data) and one API key; both servers run with auth, the audit log, metrics and the body limit on, as
deployed (the per-key rate limit is raised so it never refuses the load). The route is the app's predict with one
record: cheap, so what is measured is the serving path, not the model.
  * plain: `luodi serve`'s app (create_app, chat engine on first use) under uvicorn, one process;
  * ray: `luodi serve --ray` (a local Ray, 1 replica, the same app through serve.ingress, HAProxy in front: Ray
    Serve's high-throughput mode, as `luodi serve --ray` starts it by default).
They run one at a time (plain, then Ray; `--rounds` windows of load each), each alone as a deployment is.
`--together` starts both and loads them in turn, alternating which goes first, so a change in the machine's other
load hits both alike; Ray's processes then idle through plain's windows, and the CPU they take meanwhile (which
counts against plain) is printed. The
client is one asyncio process (aiohttp when installed, else httpx) with `--clients` workers, each sending its next
request when the last one is answered. Printed: requests/s, p50 / p95 latency of each, the throughput ratio
(goal >= 80 %) and the added p50 (goal <= 2 ms); then `--single` requests one at a time, whose added p50 is the
per-request cost without queueing (alternating servers). Stored in bench/results/ray.json through record.save.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from record import load, machine, save
from serve import free_port, load_note, stop

from luodi.serve.ray_serve import is_luodi_health

GOAL_RATIO = 0.80
GOAL_ADDED_P50_MS = 2.0
APP = "load-diag"
ROOT = Path(__file__).resolve().parents[1]


def serve_plain(port: int) -> None:
    """`luodi serve`'s app under uvicorn as run_server starts it (engine loaded on first use, like a Ray replica)."""
    import uvicorn

    from luodi.serve.app import create_app

    uvicorn.run(create_app(preload=False), host="127.0.0.1", port=port, log_level="warning",
                timeout_graceful_shutdown=5)


def prepare(home: Path) -> tuple[str, dict]:
    """Train the tiny app and create the API key in `home`; (key, one record to predict)."""
    import yaml
    from sklearn.datasets import load_breast_cancer

    os.environ["LUODI_HOME"] = str(home)
    from luodi import api
    from luodi.keys import create_key
    from luodi.settings import reset_settings

    reset_settings()
    cfg = {"name": APP, "task": "tabular",
           "data": {"format": "sklearn:breast_cancer", "columns": {"label": "target", "positive": "malignant"},
                    "split": {"valid": 0.25, "seed": 0}},
           "model": {"type": "lightgbm", "options": {"n_estimators": 30, "num_leaves": 8}},
           "train": {"epochs": 1, "seed": 0}}
    (home / f"{APP}.yaml").write_text(yaml.safe_dump(cfg))
    api.train(home / f"{APP}.yaml", progress=False)
    record = {k: float(v) for k, v in load_breast_cancer(as_frame=True).data.iloc[0].items()}
    return create_key("bench-load").key, record


def start(cmd: list[str], env: dict, url: str, log: Path, timeout: float = 300) -> subprocess.Popen:
    """Start a server and wait until its /health answers 200 (Ray's proxy answers 404 / 503 before the app is up)."""
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while True:
        if is_luodi_health(url):
            return proc
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            print(log.read_text()[-3000:])
            raise RuntimeError(f"{' '.join(cmd[:4])} did not answer {url}/health (log above)")
        time.sleep(0.5)


def one_client_pairs(urls: dict[str, str], key: str, record: dict, n: int) -> dict[str, float]:
    """p50 of `n` requests per server sent one at a time, alternating servers (after 20 unmeasured each): the
    per-request cost with no queueing, both under the same background load."""
    lat: dict[str, list[float]] = {k: [] for k in urls}
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
        for i in range(n + 20):
            for kind in (list(urls) if i % 2 else list(urls)[::-1]):
                t0 = time.perf_counter()
                assert c.post(f"{urls[kind]}/v1/apps/{APP}/predict", json=record).status_code == 200
                if i >= 20:
                    lat[kind].append((time.perf_counter() - t0) * 1000)
    return {k: round(statistics.median(v), 3) for k, v in lat.items()}


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and all its descendants (Ray's raylet, workers, HAProxy)."""
    import psutil

    total = 0.0
    root = psutil.Process(pid)
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM to the server process alone: `luodi serve --ray` then shuts Serve and its local Ray down in order
    (a signal to the whole group would kill Ray's processes first and orphan HAProxy); the group only if it hangs."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            stop(proc)


async def drive(url: str, key: str, record: dict, clients: int, warmup: float, seconds: float) -> dict:
    """`clients` closed-loop workers for warmup + seconds; latencies of the requests sent after the warm-up."""
    target = f"{url}/v1/apps/{APP}/predict"
    headers = {"Authorization": f"Bearer {key}"}
    lat: list[float] = []
    errors: dict[int, int] = {}
    start_at = time.perf_counter() + warmup
    stop_at = start_at + seconds
    try:
        import aiohttp
    except ImportError:
        aiohttp = None

    async def worker(post) -> None:
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                return
            status = await post()
            t1 = time.perf_counter()
            if status != 200:
                errors[status] = errors.get(status, 0) + 1
            elif t0 >= start_at and t1 <= stop_at:
                lat.append((t1 - t0) * 1000)

    if aiohttp is not None:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as s:
            async def post() -> int:
                async with s.post(target, json=record, headers=headers) as r:
                    await r.read()
                    return r.status

            await asyncio.gather(*(worker(post) for _ in range(clients)))
    else:
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(limits=limits, timeout=60) as c:
            async def post() -> int:
                return (await c.post(target, json=record, headers=headers)).status_code

            await asyncio.gather(*(worker(post) for _ in range(clients)))
    return {"latencies": lat, "rps": round(len(lat) / seconds, 1), "errors": errors,
            "client": "aiohttp" if aiohttp is not None else "httpx"}


def start_server(kind: str, work: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "LUODI_HOME": str(work), "HF_HUB_OFFLINE": "1", "LUODI_AUTH": "on",
           "LUODI_RATE_LIMIT_RPM": str(10**9)}
    if kind == "plain":
        cmd = [sys.executable, __file__, "--serve-plain", str(port)]
    else:
        cmd = [str(Path(sys.executable).parent / "luodi"), "serve", "--ray", "--no-key", "--port", str(port),
               "--min-replicas", "1", "--max-replicas", "1"]
    return start(cmd, env, url, work / f"{kind}.log"), url


def check_ready(url: str, key: str, record: dict) -> None:
    r = httpx.post(f"{url}/v1/apps/{APP}/predict", json=record, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    assert r.status_code == 200 and r.json()["label"] == "malignant", f"{url}: {r.text}"


def measure(work: Path, key: str, record: dict, args: argparse.Namespace) -> dict:
    """One server at a time (plain, then Ray: each deployment alone on the machine, as it runs for real),
    `--rounds` windows each. `--together`: both up, loaded in turn, alternating which goes first, so a change in the
    machine's other load hits both alike, while Ray's idle processes take CPU from plain (reported)."""
    procs: dict[str, subprocess.Popen] = {}
    urls: dict[str, str] = {}
    runs: dict[str, list[dict]] = {"plain": [], "ray": []}
    window = args.seconds / args.rounds
    ray_idle_cpu, plain_seconds = 0.0, 0.0
    single: dict[str, float] = {}
    try:
        if not args.together:
            for kind in ("plain", "ray"):
                procs[kind], urls[kind] = start_server(kind, work)
                check_ready(urls[kind], key, record)
                for _ in range(args.rounds):
                    runs[kind].append(asyncio.run(drive(urls[kind], key, record, args.clients, args.warmup, window)))
                single.update(one_client_pairs({kind: urls[kind]}, key, record, args.single))
                stop_server(procs.pop(kind))
        else:
            for kind in ("plain", "ray"):
                procs[kind], urls[kind] = start_server(kind, work)
                check_ready(urls[kind], key, record)
            for i in range(args.rounds):
                for kind in (("plain", "ray") if i % 2 == 0 else ("ray", "plain")):
                    cpu0 = tree_cpu_seconds(procs["ray"].pid) if kind == "plain" else 0.0
                    runs[kind].append(asyncio.run(drive(urls[kind], key, record, args.clients, args.warmup, window)))
                    if kind == "plain":
                        ray_idle_cpu += tree_cpu_seconds(procs["ray"].pid) - cpu0
                        plain_seconds += args.warmup + window
            single = one_client_pairs(urls, key, record, args.single)
    finally:
        for proc in procs.values():
            stop_server(proc)
    out = {}
    for kind, rs in runs.items():
        lat = sorted(x for r in rs for x in r.pop("latencies"))
        out[kind] = {"requests": len(lat), "rps": round(len(lat) / args.seconds, 1),
                     "rps_by_round": [r["rps"] for r in rs],
                     "p50_ms": round(statistics.median(lat), 3), "p95_ms": round(lat[int(0.95 * (len(lat) - 1))], 3),
                     "errors": sum(sum(r["errors"].values()) for r in rs), "client": rs[0]["client"],
                     "one_client_p50_ms": single[kind]}
        o = out[kind]
        print(f"  {kind:<6} {o['rps']:8.1f} req/s   p50 {o['p50_ms']:7.2f} ms   p95 {o['p95_ms']:7.2f} ms   "
              f"({o['requests']} requests, {o['errors']} errors; rounds {o['rps_by_round']}); one client alone: "
              f"p50 {o['one_client_p50_ms']:.2f} ms", flush=True)
    out["mode"] = "together" if args.together else "apart"
    if plain_seconds:
        out["ray_idle_cpu_cores"] = round(ray_idle_cpu / plain_seconds, 3)
        print(f"  Ray's processes while idle (during plain's windows): {out['ray_idle_cpu_cores']:.3f} of a core")
    return out


def goals(r: dict) -> list[dict]:
    ratio = r["ray"]["rps"] / r["plain"]["rps"]
    added = r["ray"]["p50_ms"] - r["plain"]["p50_ms"]
    note = f"{r['clients']} clients, tiny table app's predict, plain uvicorn {r['plain']['rps']} req/s"
    return [
        {"goal": "Ray Serve throughput / plain uvicorn", "value": round(ratio, 3), "target": GOAL_RATIO, "op": ">=",
         "met": ratio >= GOAL_RATIO, "note": note},
        {"goal": "Ray Serve added p50 (ms)", "value": round(added, 3), "target": GOAL_ADDED_P50_MS, "op": "<=",
         "met": added <= GOAL_ADDED_P50_MS,
         "note": f"at {r['clients']} clients, plain p50 {r['plain']['p50_ms']} ms; one client alone: "
                 f"{r['added_p50_one_client_ms']} ms added"},
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=16, help="concurrent clients (closed loop)")
    ap.add_argument("--seconds", type=float, default=20, help="measured seconds per server, all rounds together")
    ap.add_argument("--rounds", type=int, default=4, help="alternating windows of load per server")
    ap.add_argument("--warmup", type=float, default=1, help="seconds of load before each window is measured")
    ap.add_argument("--together", action="store_true", help="both servers up, loaded in turn (alternating windows) "
                    "instead of one at a time")
    ap.add_argument("--single", type=int, default=300, help="requests sent one at a time after the load")
    ap.add_argument("--serve-plain", type=int, metavar="PORT", help=argparse.SUPPRESS)
    ap.add_argument("--no-save", action="store_true", help="print only; keep bench/results/ray.json")
    args = ap.parse_args()
    if args.serve_plain:
        return serve_plain(args.serve_plain)
    try:
        import ray.serve  # noqa: F401
    except ImportError:
        sys.exit("bench/load.py needs Ray Serve: pip install 'luodi[ray]'")
    load_before = load_note()
    with tempfile.TemporaryDirectory(prefix="luodi-bench-load-") as tmp:
        work = Path(tmp)
        key, record = prepare(work)
        print(f"{args.clients} clients, {args.seconds:g} s per server in {args.rounds} windows (each after "
              f"{args.warmup:g} s warm-up); {load_before}")
        r = {"clients": args.clients, "seconds": args.seconds, "rounds": args.rounds,
             "route": f"POST /v1/apps/{APP}/predict (1 record)"}
        r.update(measure(work, key, record, args))
    r["load_before"] = load_before
    r["throughput_ratio"] = round(r["ray"]["rps"] / r["plain"]["rps"], 3)
    r["added_p50_ms"] = round(r["ray"]["p50_ms"] - r["plain"]["p50_ms"], 3)
    r["added_p50_one_client_ms"] = round(r["ray"]["one_client_p50_ms"] - r["plain"]["one_client_p50_ms"], 3)
    stored = {"results": r, "goals": goals(r), "machine": machine(),
              "command": "python bench/load.py " + " ".join(sys.argv[1:])}
    for g in stored["goals"]:
        print(f"{g['goal']:<40} {g['value']:>8} (target {g['op']} {g['target']}): {'met' if g['met'] else 'MISSED'}")
    print(f"added p50 with one client alone (no queueing): {r['added_p50_one_client_ms']} ms")
    if not args.no_save:
        replaced = load("ray") is not None
        print(f"stored in {save('ray', stored)}" + (" (replacing the previous run)" if replaced else ""))


if __name__ == "__main__":
    main()
