"""Where the bench scripts keep what they measured: bench/results/<name>.json, with the machine it ran on.

The tables in docs/benchmarks.md are rendered from these files by bench/tables.py, so a number in the docs
always comes from a stored run, never from a hand edit.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """What the numbers depend on: CPU model and vector extensions, cores, the 1-minute load when stored."""
    model, flags = platform.processor() or "unknown", []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                flags = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if f in have]
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cpu_features": flags,
        "cores": os.cpu_count(),
        "load_average": round(os.getloadavg()[0], 2),
        "date": time.strftime("%Y-%m-%d"),
    }


def load(name: str, results: Path = RESULTS) -> Any:
    """The stored result `name`, or None when it was never run."""
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def save(name: str, data: Any, results: Path = RESULTS) -> Path:
    """Store a result crash-safely (a killed run leaves the previous file whole)."""
    from luodi import atomic

    results.mkdir(parents=True, exist_ok=True)
    path = results / f"{name}.json"
    atomic.write_text(path, json.dumps(data, indent=2, default=float) + "\n")
    return path
