"""The trade-off table of `luodi optimize`: a baseline run and an optimized run measured side by side, in one
process, on the same validation rows: file size, parameters, batch-1 latency (p50 / p95), batch-32 throughput,
the app's quality metric and agreement with the baseline's predictions."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from luodi.apps.registry import AUDIT_PAGE, CHECKPOINT_DIR, MANIFEST, OPTIMIZED

COLUMNS = (
    "size_mb", "parameters", "p50_ms", "p95_ms", "rows_per_s_batch1", "rows_per_s_batch32", "quality", "agreement"
)
NOT_MODEL = {MANIFEST, AUDIT_PAGE, OPTIMIZED, "report.html", "metrics.json", "config.yaml"}


def model_bytes(run_dir: Path) -> int:
    """Bytes of a run's model files (weights, graphs, vocabularies; not its reports and metadata)."""
    root = Path(run_dir)
    return sum(
        p.stat().st_size for p in root.rglob("*")
        if p.is_file() and p.name not in NOT_MODEL and p.relative_to(root).parts[0] != CHECKPOINT_DIR
    )


def _outputs(task: Any, records: list[dict[str, Any]]) -> list[Any]:
    """What is compared between two models: each prediction's label (or its value, for regressors; the entity
    spans found, for taggers)."""
    out = task.predict(records)
    if out and "entities" in out[0]:
        return [sorted((e["label"], e["start"], e["end"]) for e in o["entities"]) for o in out]
    if out and "items" in out[0]:  # recommendations: the ranked item ids (their rounded scores may differ by 1e-4)
        return [[i["item_id"] for i in o["items"]] for o in out]
    key = next((k for k in ("label", "value", "prediction", "score") if k in out[0]), None) if out else None
    return [o[key] if key else o for o in out]


def _agreement(a: list[Any], b: list[Any]) -> float:
    if a and isinstance(a[0], int | float) and not isinstance(a[0], bool):
        x, y = np.asarray(a, float), np.asarray(b, float)
        return float(np.mean(np.isclose(x, y, rtol=1e-2, atol=1e-3)))
    return float(np.mean([x == y for x, y in zip(a, b, strict=True)]))


def _latencies(tasks: list[Any], records: list[dict[str, Any]], n: int) -> list[list[float]]:
    """Batch-1 times of each task on the same records, taken in turn (record by record, the order swapped every
    record): a load that comes and goes on a shared machine then weighs on both, and their ratio stays fair."""
    for r in records[:5]:  # warm-up: sessions, caches, lazy imports
        for task in tasks:
            task.predict([r])
    times: list[list[float]] = [[] for _ in tasks]
    for i, r in enumerate(records[:n]):
        order = range(len(tasks)) if i % 2 == 0 else reversed(range(len(tasks)))
        for k in order:
            t0 = time.perf_counter()
            tasks[k].predict([r])
            times[k].append(time.perf_counter() - t0)
    return times


def _throughput(task: Any, records: list[dict[str, Any]]) -> float:
    t0 = time.perf_counter()
    for start in range(0, len(records), 32):
        task.predict(records[start : start + 32])
    return len(records) / (time.perf_counter() - t0)


def _row(task: Any, run_dir: Path, valid: Any, metric: str, times: list[float], per_s_32: float) -> dict:
    """One row of the table (agreement is filled in by `compare`)."""
    quality = task.evaluate(valid).get(metric)
    return {
        # a model that reads weights from outside its run (a bundled encoder) is charged for them too
        "size_mb": round((model_bytes(run_dir) + getattr(task, "outside_model_bytes", lambda: 0)()) / 1e6, 2),
        "parameters": task.parameter_count() if hasattr(task, "parameter_count") else None,
        "p50_ms": round(float(np.percentile(times, 50)) * 1000, 3),
        "p95_ms": round(float(np.percentile(times, 95)) * 1000, 3),
        "rows_per_s_batch1": round(len(times) / sum(times), 1),
        "rows_per_s_batch32": round(per_s_32, 1),
        "quality": None if quality is None else round(float(quality), 5),
    }


def compare(
    base: Any, base_dir: Path, optimized: Any, optimized_dir: Path, valid: Any, metric: str, opts: Any
) -> dict[str, Any]:
    """Both rows, the ratios (speed-up, size) and the agreement of the optimized model with the baseline."""
    records = base.records_of(valid)
    times = _latencies([base, optimized], records, opts.latency_rows)
    batch = records[: opts.throughput_rows]
    per_s_32 = [0.0, 0.0]
    for k in (0, 1, 1, 0):  # each twice, in mirrored order; the better of the two
        per_s_32[k] = max(per_s_32[k], _throughput((base, optimized)[k], batch))
    rows = {
        name: _row(task, d, valid, metric, times[k], per_s_32[k])
        for k, (name, task, d) in enumerate((("baseline", base, base_dir), ("optimized", optimized, optimized_dir)))
    }
    rows["baseline"]["agreement"] = 1.0
    rows["optimized"]["agreement"] = round(_agreement(_outputs(base, records), _outputs(optimized, records)), 5)
    b, o = rows["baseline"], rows["optimized"]
    ratios = {
        "speedup_p50": round(b["p50_ms"] / o["p50_ms"], 3),
        "speedup_batch1": round(o["rows_per_s_batch1"] / b["rows_per_s_batch1"], 3),
        "speedup_batch32": round(o["rows_per_s_batch32"] / b["rows_per_s_batch32"], 3),
        "size_ratio": round(b["size_mb"] / max(o["size_mb"], 1e-9), 3),
    }
    if b["quality"] is not None and o["quality"] is not None:
        ratios["quality_delta"] = round(o["quality"] - b["quality"], 5)
    return {"metric": metric, "rows": rows, "ratios": ratios, "valid_rows": len(records)}


def table_html(table: dict[str, Any]) -> str:
    """The table as an HTML section for report.html."""
    head = "".join(f"<th>{c}</th>" for c in ("model", *COLUMNS))
    body = "".join(
        f"<tr><th>{name}</th>" + "".join(f"<td>{row.get(c)}</td>" for c in COLUMNS) + "</tr>"
        for name, row in table["rows"].items()
    )
    ratios = ", ".join(f"{k} {v}" for k, v in table["ratios"].items())
    return (f"<h2>Optimized against its baseline (quality: {table['metric']}, {table['valid_rows']} validation "
            f"rows)</h2><table><tr>{head}</tr>{body}</table><p>{ratios}</p>")
