"""`luodi package APP.yaml --out DIR`: a Docker build context serving one trained app.

The context holds the app's finished run (files verified against its manifest first), package.json (which run,
its task and metrics, the server image it builds on) and a Dockerfile FROM luodi's server image (the repository's
Dockerfile, `luodi:latest` by default). Building it copies the run into the image's LUODI_HOME (/data) and
registers it in the image's store (`python -m luodi.apps.package register`, which verifies the manifest again),
so the container serves the app's predictions (and the OpenAI-compatible API) as soon as it starts:

    luodi package examples/churn.yaml --out build/churn
    docker build -t churn:v1 build/churn && docker run --rm -p 8000:8000 -e LUODI_ADMIN_KEY=... churn:v1
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from luodi.apps import registry
from luodi.apps.configs import AppRef, app_name
from luodi.errors import LuodiError, NotFound
from luodi.train import CHECKPOINT_DIR

DEFAULT_IMAGE = "luodi:latest"
IMAGE_HOME = "/data"  # LUODI_HOME in the server image (its Dockerfile), owned by its user luodi (10001)
PACKAGE_FILE = "package.json"


@dataclass
class Package:
    """A written build context: `out` holds Dockerfile, package.json and home/runs/<app>/<version>/."""

    app: str
    version: str
    out: Path
    image: str
    files: int

    def as_dict(self) -> dict[str, Any]:
        return {"app": self.app, "version": self.version, "out": str(self.out), "image": self.image,
                "files": self.files}


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise LuodiError(f"--out '{out}' is a file; name a new or empty folder for the build context", param="out")
    if out.is_dir() and any(out.iterdir()):
        raise LuodiError(f"--out '{out}' is not empty; name a new or empty folder (or remove it first)",
                         param="out")


def dockerfile(app: str, version: str, image: str = DEFAULT_IMAGE) -> str:
    run = f"{IMAGE_HOME}/runs/{app}/{version}"
    return f"""\
# luodi app '{app}' run {version}: its predictions (POST /v1/apps/{app}/predict) and the OpenAI-compatible API.
# Written by `luodi package`; build with `docker build -t {app}:{version} .` once the server image exists
# (the luodi repository's Dockerfile: deploy/docker/build.sh).
ARG IMAGE={image}
FROM ${{IMAGE}}
LABEL org.opencontainers.image.title="luodi-{app}" org.opencontainers.image.version="{version}"
ENV LUODI_HOME={IMAGE_HOME}
COPY --chown=10001:10001 home/ {IMAGE_HOME}/
# the run into this image's store, its files verified against manifest.json once more
RUN python -m luodi.apps.package register {IMAGE_HOME}/{PACKAGE_FILE} {run}
"""


def package(app: AppRef, out: str | Path, version: str | None = None, image: str = DEFAULT_IMAGE) -> Package:
    """Write the build context for `app`'s served run (or `version`) into `out` (a new or empty folder)."""
    name = app_name(app)
    out = Path(out).expanduser()
    _check_out(out)
    if not registry.list_runs(name):
        raise NotFound(f"unknown app '{name}': it has no runs here; train it first: `luodi train APP.yaml`",
                       param="app")
    run = registry.get_run(name, version)
    if run.status != "done":
        raise LuodiError(f"run {name} {run.version} is {run.status}, not finished; only a finished run can be "
                         "packaged (`luodi train APP.yaml --resume` finishes it)", status=409, param="version")
    manifest = registry.verify_manifest(run.path)
    dest = out / "home" / "runs" / name / run.version
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(run.path, dest, ignore=shutil.ignore_patterns(CHECKPOINT_DIR, registry.AUDIT_PAGE))
    registry.verify_manifest(dest)  # the copy too: what the image gets is what training wrote
    info = {"app": name, "version": run.version, "task": run.task, "metrics": run.metrics, "image": image,
            "libraries": manifest.get("libraries", {})}
    (out / "home" / PACKAGE_FILE).write_text(json.dumps(info, indent=2) + "\n")
    (out / "Dockerfile").write_text(dockerfile(name, run.version, image))
    (out / ".dockerignore").write_text("*\n!home/\n")
    return Package(name, run.version, out, image, len(manifest["files"]))


def register(package_file: str | Path, run_dir: str | Path) -> registry.RunInfo:
    """Record a packaged run (copied to `run_dir`) as a finished run in this LUODI_HOME's store, so that the
    server serves it. Refuses files that do not match the run's manifest."""
    from datetime import UTC, datetime

    from luodi.store.db import session_scope
    from luodi.store.tables import Run

    info = json.loads(Path(package_file).read_text())
    run_dir = Path(run_dir)
    registry.verify_manifest(run_dir)
    with session_scope() as s:
        s.add(Run(app=info["app"], version=info["version"], task=info["task"], status="done", path=str(run_dir),
                  metrics=info.get("metrics") or {}, finished_at=datetime.now(UTC)))
    return registry.get_run(info["app"], info["version"])


def main(argv: list[str] | None = None) -> int:
    """`python -m luodi.apps.package register PACKAGE_JSON RUN_DIR` (the packaged image's build step)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] != "register":
        print("usage: python -m luodi.apps.package register PACKAGE_JSON RUN_DIR", file=sys.stderr)
        return 2
    try:
        run = register(args[1], args[2])
    except LuodiError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 2
    print(f"registered {run.app} {run.version} ({run.task}) at {run.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
