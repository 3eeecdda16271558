"""Shared fixtures: every test session runs in its own LUODI_HOME, never touching ~/.luodi."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

_HOME = tempfile.mkdtemp(prefix="luodi-test-home-")
os.environ["LUODI_HOME"] = _HOME
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_sessionfinish(session, exitstatus) -> None:
    """Remove the session's LUODI_HOME (about 0.5 GB: the converted model, runs, indexes) unless
    LUODI_KEEP_TEST_HOME=1 asks to keep it for a look."""
    if os.environ.get("LUODI_KEEP_TEST_HOME") != "1":
        shutil.rmtree(_HOME, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def luodi_home() -> Path:
    return Path(_HOME)


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    """The shared datasets folder (LUODI_DATASETS, default ../shared/datasets); skips when absent."""
    from luodi.data.readers import datasets_root

    p = datasets_root()
    if not p.is_dir():
        pytest.skip(f"datasets folder {p} not found: set LUODI_DATASETS to run dataset tests")
    return p.resolve()


class LiveServer:
    """A running luodi server: `url` (http://127.0.0.1:P), `base_url` (…/v1), `key` (valid API key), `app`."""

    def __init__(self, url: str, key: str, app, server, thread):
        self.url = url
        self.base_url = f"{url}/v1"
        self.key = key
        self.app = app
        self._server = server
        self._thread = thread

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def openai(self, **kw):
        """An official `openai.OpenAI` client pointed at this server."""
        import openai

        return openai.OpenAI(base_url=self.base_url, api_key=self.key, **kw)


def start_server(app, name: str = "luodi-live-server"):
    """Run a FastAPI app under uvicorn on a free port in a background thread, once its /health answers:
    (url, uvicorn server, thread); set server.should_exit and join the thread to stop it."""
    import threading
    import time

    import httpx
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if not thread.is_alive():
            raise RuntimeError("live_server: uvicorn stopped during start-up (see the log above)")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("live_server: /health did not answer within 180 s")
        time.sleep(0.1)
    return url, server, thread


@pytest.fixture(scope="session")
def live_server(luodi_home):
    """Start create_app() under uvicorn on a free port (background thread), with an API key."""
    from luodi.keys import create_key
    from luodi.serve.app import create_app

    app = create_app()
    url, server, thread = start_server(app)
    key = create_key("pytest-live-server", admin=True).key  # admin: key-management tests use it
    try:
        yield LiveServer(url, key, app, server, thread)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def banking_slice_app(datasets_dir: Path, folder: Path, name: str, options: dict, **sections) -> dict:
    """A small text-classification app on banking77 (6 intents x 30 texts, 30 % held out) trained through the
    Python API: {"yaml", "base" (its run), "folder", "texts"}. Shared by the `luodi optimize` tests."""
    import pandas as pd
    import yaml

    from luodi import api

    df = pd.read_csv(datasets_dir / "banking77/train.csv")
    keep = sorted(df.category.unique())[:6]
    df = df[df.category.isin(keep)].groupby("category").head(30)
    df.to_csv(folder / "bank6.csv", index=False)
    app = {
        "name": name,
        "task": "text-classification",
        "data": {"path": str(folder / "bank6.csv"), "columns": {"text": "text", "label": "category"},
                 "split": {"valid": 0.3, "seed": 0}},
        "model": {"options": options},
        "train": {"epochs": 2, "lr": 0.0002, "batch_size": 16},
        "evaluate": {"metrics": ["accuracy"]},
        **sections,
    }
    path = folder / "app.yaml"
    path.write_text(yaml.safe_dump(app))
    return {"yaml": str(path), "base": api.train(str(path), progress=False), "folder": folder,
            "texts": df.text.tolist()}


def tfidf_only_variant(app: dict, name: str) -> str:
    """`app` (from banking_slice_app) renamed and with only the TF-IDF head, trained: the app with nothing neural,
    which the optimize methods refuse. Returns its YAML path."""
    import yaml

    from luodi import api

    raw = yaml.safe_load(open(app["yaml"]))
    raw["name"] = name
    raw["model"]["options"] = {"features": ["tfidf"]}
    path = app["folder"] / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    api.train(str(path), progress=False)
    return str(path)
