"""What bench/trust.py (issue 19) and bench/privacy.py (issue 18) share: run a part's bench script, then print every
stored goal of the issue's parts against its target (bench/tables.py renders the same rows into the docs)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import record
import tables

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent


def run_script(part: str, args: list[str]) -> dict[str, Any]:
    """Run one part's bench script (`args`: the script and its options); its goals come back through
    bench/results/<part>.json."""
    cmd = [sys.executable, str(BENCH / args[0]), *args[1:]]
    print(f"\n=== {part}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.monotonic()
    rc = subprocess.run(cmd, cwd=ROOT).returncode
    return {"part": part, "rc": rc, "seconds": round(time.monotonic() - t0, 1)}


def print_goals(parts: dict[str, str], script: str) -> int:
    """Every stored goal of `parts` (part -> result name) with its measured value; returns how many were missed."""
    rows = tables.goal_rows(record.RESULTS, parts)
    width = max((len(r["goal"]) for r in rows), default=10)
    missed = 0
    for r in rows:
        mark = {True: "met", False: "MISSED", None: "measured"}[r["met"]]
        missed += r["met"] is False
        print(f"{r['part']:<16} {r['goal']:<{width}}  {tables.goal_value(r):>12}  {mark}  {r.get('note') or ''}")
    for p in [p for p, name in parts.items() if record.load(name, record.RESULTS) is None]:
        print(f"{p:<16} not measured yet: python bench/{script} --only {p}")
    return missed


def run_and_store(name: str, chosen: list[str], run_part: Any, goals_of: Any) -> dict[str, Any]:
    """Run the chosen parts (`run_part(part)`: its stored detail), merge them into bench/results/<name>.json beside
    parts measured before, recompute the goals from all parts (`goals_of(parts)`), store and print them."""
    stored = record.load(name) or {"parts": {}}
    for part in chosen:
        print(f"\n=== {part}", flush=True)
        stored["parts"][part] = run_part(part)
    stored["goals"] = goals_of(stored["parts"])
    stored["machine"] = record.machine()
    record.save(name, stored)
    for g in stored["goals"]:
        print(f"{g['goal']:<72} {g['value']:>10}  {g['op']} {g['target']}  {'met' if g['met'] else 'MISSED'}  "
              f"{g.get('note') or ''}")
    return stored


def chosen_parts(ap: Any, only: str | None, known: list[str]) -> list[str]:
    """The parts --only names (all by default); an unknown one stops the script naming the known ones."""
    parts = [p.strip() for p in only.split(",")] if only else list(known)
    unknown = [p for p in parts if p not in known]
    if unknown:
        ap.error(f"unknown part '{unknown[0]}'; choose from {', '.join(known)}")
    return parts


def report(issue: int, parts: dict[str, str], script: str, doc: str, failed: list[str]) -> int:
    """Print the issue's stored goals and what failed; the exit status (1 when a part stopped with an error)."""
    print(f"\n=== issue {issue} goals (bench/results)")
    missed = print_goals(parts, script)
    if failed:
        print(f"\nparts that stopped with an error: {', '.join(failed)}")
    print(f"\n{missed} goal(s) missed; `python bench/tables.py` renders them into {doc}")
    return 1 if failed else 0
