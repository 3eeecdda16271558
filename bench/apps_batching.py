"""App serving benchmark: concurrent single-record predict requests with micro-batching against without.

    python bench/apps_batching.py [--requests 400] [--concurrency 32] [--apps diagnosis credit-risk]

Both variants of an app are trained in this run from the same App file, once with `serve.batch_size` 1 (every
request predicted alone, as before micro-batching) and once with the file's batch size; then the same
requests go through the server's ASGI app (luodi.serve.app, in process, no network) from `--concurrency`
clients at once. Prints requests per second, mean latency and the speed-up ratio. credit-risk needs the
shared datasets (LUODI_DATASETS); diagnosis uses scikit-learn's bundled data.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import record

ROOT = Path(__file__).resolve().parents[1]
APPS = {"diagnosis": ROOT / "luodi" / "demo" / "diagnosis.yaml", "credit-risk": ROOT / "examples" / "credit-risk.yaml"}


async def load(app, name: str, rows: list[dict], n: int, concurrency: int) -> tuple[float, float]:
    """(requests per second, mean latency in ms) for n requests, `concurrency` in flight at once."""
    import httpx

    lat: list[float] = []
    sem = asyncio.Semaphore(concurrency)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as c:

        async def one(i: int) -> None:
            async with sem:
                t = time.perf_counter()
                r = await c.post(f"/v1/apps/{name}/predict", json=rows[i % len(rows)])
                r.raise_for_status()
                lat.append(time.perf_counter() - t)

        await one(0)  # warm-up: loads the run
        lat.clear()
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.perf_counter() - t0
    return n / wall, 1000 * statistics.mean(lat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--apps", nargs="*", default=list(APPS))
    args = ap.parse_args()
    os.environ.setdefault("LUODI_HOME", tempfile.mkdtemp(prefix="luodi-bench-apps-"))
    os.environ["LUODI_AUTH"] = "off"
    from luodi import api
    from luodi.serve.app import create_app
    from luodi.tasks import task_for

    print(f"{'app':14s} {'variant':22s} {'req/s':>8s} {'mean ms':>8s}")
    old = record.load("apps_batching")  # apps not run now keep their stored numbers (same load settings only)
    same = old and (old["requests"], old["concurrency"]) == (args.requests, args.concurrency)
    stored = {"machine": record.machine(), "requests": args.requests, "concurrency": args.concurrency,
              "apps": dict(old["apps"]) if same else {}}
    for name in args.apps:
        try:
            cfg = api.load_app(APPS[name])
            task = task_for(cfg)
            valid = task.split(task.read(None))[1].head(64)
            rows = [{k: v for k, v in r.items() if k != task.cols.label} for r in valid.to_dict(orient="records")]
        except Exception as e:  # noqa: BLE001 - e.g. no datasets folder: skip that app
            print(f"{name:14s} skipped: {e}")
            continue
        result, numbers = {}, {}
        for variant, size in (("alone (batch_size 1)", 1), (f"batched (batch_size {cfg.serve.batch_size})", None)):
            over = {"name": f"bench-{name}-{'alone' if size == 1 else 'batched'}"}
            if size:
                over["serve.batch_size"] = size
            api.train(APPS[name], progress=False, overrides=over)
            rps, ms = asyncio.run(load(create_app(preload=False), over["name"], rows, args.requests, args.concurrency))
            result[variant] = rps
            numbers["alone" if size == 1 else "batched"] = {
                "batch_size": size or cfg.serve.batch_size, "req_per_s": rps, "mean_ms": ms}
            print(f"{name:14s} {variant:22s} {rps:8.1f} {ms:8.1f}")
        alone, batched = result.values()
        print(f"{name:14s} {'speed-up':22s} {batched / alone:7.2f}x")
        stored["apps"][name] = numbers
    if stored["apps"]:
        print(f"stored in {record.save('apps_batching', stored)}; docs tables: python bench/tables.py")


if __name__ == "__main__":
    main()
