"""Shared fixtures: every test session runs in its own LUODI_HOME, never touching ~/.luodi."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pytest

_HOME = tempfile.mkdtemp(prefix="luodi-test-home-")
os.environ["LUODI_HOME"] = _HOME
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


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
    p = Path(os.environ.get("LUODI_DATASETS", Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"))
    if not p.is_dir():
        pytest.skip(f"datasets folder {p} not found: set LUODI_DATASETS to run dataset tests")
    return p.resolve()
