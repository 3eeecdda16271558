"""The run registry: training runs indexed in the store table `runs`, files under runs/<app>/<version>/.

Files are written atomically (temp file + os.replace); manifest.json (sha256 of every file + library
versions) is written last and verified when a run is loaded, so a crash or a tampered file is detected.
"""

from __future__ import annotations

import platform
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from luodi import atomic, crypto
from luodi.atomic import sha256_file
from luodi.errors import LuodiError, NotFound
from luodi.settings import get_settings
from luodi.store.db import session_scope
from luodi.store.tables import Run, ServedVersion
from luodi.train import CHECKPOINT_DIR  # per-epoch state: removed when a run finishes, never in its manifest

MANIFEST = "manifest.json"
AUDIT_PAGE = "audit.html"  # written by `luodi audit` beside report.html; derived, so not in the manifest
OPTIMIZED = "optimize.json"  # in a run `luodi optimize` made: how, from which version, the trade-off table
GATE = "gate.json"  # in a trained run that missed its evaluate.goal: serves only once promoted with force
RESUMABLE = ("running", "interrupted", "failed")
_LIBS = (
    "luodi",
    "numpy",
    "pandas",
    "scikit-learn",
    "lightgbm",
    "torch",
    "safetensors",
    "onnxruntime",
    "transformers",
    "optuna",
)


class RunIntegrityError(LuodiError):
    """A run's files do not match its manifest."""

    status = 409
    code = "integrity_error"


@dataclass
class RunInfo:
    app: str
    version: str
    task: str
    status: str
    path: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    finished_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "version": self.version,
            "task": self.task,
            "status": self.status,
            "path": str(self.path),
            "metrics": self.metrics,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }


def _info(r: Run) -> RunInfo:
    return RunInfo(
        r.app, r.version, r.task, r.status, Path(r.path), dict(r.metrics or {}), r.created_at, r.finished_at
    )


# ---- manifest -------------------------------------------------------------------------------------------


def _run_files(run_dir: Path) -> list[Path]:
    out = []
    for p in sorted(run_dir.rglob("*")):
        rel = p.relative_to(run_dir)
        if (
            p.is_file()
            and rel.parts[0] != CHECKPOINT_DIR
            and p.name != MANIFEST
            and not p.name.startswith(".")
        ):
            out.append(p)
    return out


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for lib in _LIBS:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            pass
    return out


def write_manifest(run_dir: Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    files = {
        str(p.relative_to(run_dir)): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in _run_files(run_dir)
    }
    man = {
        "created_at": datetime.now(UTC).isoformat(),
        "files": files,
        "libraries": library_versions(),
        **(extra or {}),
    }
    atomic.write_json(run_dir / MANIFEST, man)
    return man


def verify_manifest(run_dir: Path) -> dict[str, Any]:
    """Check every file against manifest.json; raise a clear error naming the first mismatching file."""
    mp = run_dir / MANIFEST
    if not mp.exists():
        raise RunIntegrityError(
            f"run '{run_dir}' has no {MANIFEST}: it did not finish; retrain it "
            "(`luodi train APP.yaml --resume`)"
        )
    man = crypto.read_json(mp)
    for rel, meta in man["files"].items():
        p = run_dir / rel
        if not p.exists():
            raise RunIntegrityError(
                f"run '{run_dir}': file '{rel}' listed in {MANIFEST} is missing; "
                "restore it or retrain the app"
            )
        if sha256_file(p) != meta["sha256"]:
            raise RunIntegrityError(
                f"run '{run_dir}': file '{rel}' was modified after training (sha256 mismatch); "
                "restore the original file or retrain the app"
            )
    return man


# ---- runs in the store ----------------------------------------------------------------------------------


def runs_root(override: str | None = None) -> Path:
    if override:  # (a runs folder of its own: encrypted like the default one when a key is set)
        crypto.protect_root(Path(override).expanduser())
    return Path(override).expanduser() if override else get_settings().runs_dir


def _next_version(s, app: str) -> str:
    versions = s.scalars(select(Run.version).where(Run.app == app)).all()
    nums = [int(v[1:]) for v in versions if v.startswith("v") and v[1:].isdigit()]
    return f"v{max(nums, default=0) + 1}"


def create_run(app: str, task: str, root: str | None = None) -> RunInfo:
    """Register a new run (status running) with the next version v1, v2, ... and create its folder."""
    for _ in range(20):
        try:
            with session_scope() as s:
                version = _next_version(s, app)
                path = runs_root(root) / app / version
                r = Run(app=app, version=version, task=task, status="running", path=str(path), metrics={})
                s.add(r)
                s.flush()
                info = _info(r)
        except IntegrityError:  # another process took this version number; try the next
            continue
        if info.path.exists():  # a stale folder from a store that was reset: move it aside, never overwrite
            info.path.rename(info.path.with_name(f"{version}.stale-{datetime.now(UTC):%Y%m%d%H%M%S}"))
        info.path.mkdir(parents=True, exist_ok=True)
        return info
    raise LuodiError(f"could not allocate a run version for app '{app}'", status=409)


def set_status(app: str, version: str, status: str, metrics: dict[str, Any] | None = None) -> RunInfo:
    with session_scope() as s:
        r = s.scalars(select(Run).where(Run.app == app, Run.version == version)).one()
        r.status = status
        if metrics is not None:
            r.metrics = metrics
        if status in ("done", "failed", "interrupted"):
            r.finished_at = datetime.now(UTC)
        s.flush()
        return _info(r)


def list_runs(app: str | None = None) -> list[RunInfo]:
    """Runs, newest first (all apps when `app` is None)."""
    with session_scope() as s:
        q = select(Run).order_by(Run.created_at.desc(), Run.id.desc())
        if app:
            q = q.where(Run.app == app)
        return [_info(r) for r in s.scalars(q).all()]


def is_optimized(run: RunInfo) -> bool:
    """Whether `luodi optimize` made this run (it serves only once promoted)."""
    return (run.path / OPTIMIZED).exists()


def write_gate(run_dir: Path, goal: Any, metrics: dict[str, Any]) -> str | None:
    """At the end of training: when the run misses its evaluate.goal (a GoalConfig), write gate.json saying why
    (it is then held back like an optimized run) and return the reason; None when it meets it or has none."""
    if goal is None or goal.metric not in metrics:
        return None
    value = float(metrics[goal.metric])
    met = value >= goal.target if goal.direction == "maximize" else value <= goal.target
    if met:
        return None
    op = "<" if goal.direction == "maximize" else ">"
    reason = f"misses its goal: {goal.metric} {value:.4g} {op} {goal.target:g}"
    atomic.write_json(run_dir / GATE, {"metric": goal.metric, "value": value, "target": goal.target,
                                       "direction": goal.direction, "reason": reason})
    return reason


def hold_reason(run: RunInfo) -> str | None:
    """Why a finished run does not serve by being the newest (None: it does): `luodi optimize` made it, or it
    missed its evaluate.goal. Either serves once promoted (a missed goal needs --force)."""
    if is_optimized(run):
        return "optimized: serves once promoted"
    gate = run.path / GATE
    if gate.exists():
        return crypto.read_json(gate)["reason"] + "; serves once promoted with --force"
    return None


def get_run(app: str, version: str | None = None) -> RunInfo:
    """A given version, or the run the app serves: the pinned one (`promote`), else its latest finished trained
    run. An optimized run, or one that missed its evaluate.goal, is never served by being newest (`hold_reason`):
    a trade-off is chosen with `promote`, not by a try."""
    runs = list_runs(app)
    version = version or pinned_version(app)
    if version:
        for r in runs:
            if r.version == version:
                return r
        raise NotFound(
            f"app '{app}' has no run '{version}'; versions: {', '.join(r.version for r in runs) or 'none'}",
            param="version",
        )
    held = []
    for r in runs:
        if r.status == "done":
            if (why := hold_reason(r)) is None:
                return r
            held.append(f"{r.version} {why}")
    if held:
        raise NotFound(f"app '{app}' has no run to serve by itself: {'; '.join(held)} "
                       f"(`luodi promote {app} VERSION [--force]`)", param="app")
    raise NotFound(f"app '{app}' has no finished run; train it first: `luodi train APP.yaml`", param="app")


def pinned_version(app: str) -> str | None:
    """The version an app is pinned to serve, or None (it serves its latest finished run)."""
    with session_scope() as s:
        row = s.get(ServedVersion, app)
        return row.version if row else None


def pin_version(app: str, version: str | None, force: bool = False) -> None:
    """Pin the version an app serves (a finished run whose files match its manifest), or unpin with None; a run
    that missed its evaluate.goal only with `force`."""
    if version is not None:
        run = get_run(app, version)
        if run.status != "done":
            raise LuodiError(
                f"run {app} {version} is {run.status}, not finished; only a finished run can be served "
                f"(`luodi train APP.yaml --resume` finishes it)", status=409, param="version",
            )
        if not force and (run.path / GATE).exists():
            raise LuodiError(
                f"run {app} {version} {crypto.read_json(run.path / GATE)['reason']}; serve it anyway with "
                f"`luodi promote {app} {version} --force` (HTTP: \"force\": true)", status=409, param="force",
            )
        verify_manifest(run.path)
    with session_scope() as s:
        row = s.get(ServedVersion, app)
        if version is None:
            if row is not None:
                s.delete(row)
        elif row is None:
            s.add(ServedVersion(app=app, version=version, set_at=datetime.now(UTC)))
        else:
            row.version, row.set_at = version, datetime.now(UTC)


def resumable_run(app: str) -> RunInfo | None:
    """The newest run that did not finish (interrupted, failed or left running by a crash)."""
    for r in list_runs(app):
        if r.status == "done":
            return None
        if r.status in RESUMABLE:
            return r
    return None


def apps_with_runs() -> list[str]:
    seen: dict[str, None] = {}
    for r in list_runs():
        if r.status == "done":
            seen.setdefault(r.app)
    return list(seen)


def delete_checkpoint(run_dir: Path) -> None:
    shutil.rmtree(run_dir / CHECKPOINT_DIR, ignore_errors=True)
