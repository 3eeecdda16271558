"""`luodi package`: the Docker build context for one trained app (the run copied and verified, its Dockerfile),
its clear errors, and the build step that registers the copied run in a fresh store."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from luodi import api
from luodi.apps import registry
from luodi.apps.package import main as package_main
from luodi.apps.package import package
from luodi.cli import app as cli
from luodi.errors import LuodiError, NotFound

APP = {
    "name": "packaged",
    "task": "tabular",
    "data": {"format": "sklearn:breast_cancer", "columns": {"label": "target"}, "split": {"valid": 0.25}},
    "model": {"type": "lightgbm", "options": {"n_estimators": 20, "num_leaves": 8}},
    "train": {"epochs": 1, "seed": 0},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = api.train(APP, progress=False)
    yaml_file = tmp_path_factory.mktemp("app") / "packaged.yaml"
    yaml_file.write_text(json.dumps(APP))  # JSON is YAML
    return run, yaml_file


def test_package_writes_a_verified_build_context(trained, tmp_path):
    run, yaml_file = trained
    out = tmp_path / "ctx"
    result = CliRunner().invoke(cli, ["package", str(yaml_file), "--out", str(out)])
    assert result.exit_code == 0, result.output
    version = registry.get_run("packaged").version
    copied = out / "home" / "runs" / "packaged" / version
    manifest = registry.verify_manifest(copied)  # every file the manifest lists, unchanged
    assert manifest["files"] and (copied / "config.yaml").exists()
    assert not (copied / "checkpoint").exists()
    info = json.loads((out / "home" / "package.json").read_text())
    assert (info["app"], info["version"], info["task"], info["image"]) == ("packaged", version, "tabular",
                                                                         "luodi:latest")
    text = (out / "Dockerfile").read_text()
    assert "ARG IMAGE=luodi:latest\nFROM ${IMAGE}" in text
    assert "ENV LUODI_HOME=/data" in text
    assert "COPY --chown=10001:10001 home/ /data/" in text
    assert f"python -m luodi.apps.package register /data/package.json /data/runs/packaged/{version}" in text
    assert (out / ".dockerignore").read_text() == "*\n!home/\n"


def test_package_errors(trained, tmp_path):
    with pytest.raises(NotFound, match="unknown app 'nobody'"):
        package("nobody", tmp_path / "a")
    with pytest.raises(NotFound, match="no run 'v99'"):
        package("packaged", tmp_path / "b", version="v99")
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(LuodiError, match="is a file"):
        package("packaged", afile)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(LuodiError, match="not empty"):
        package("packaged", tmp_path / "full")
    result = CliRunner().invoke(cli, ["package", "nobody", "--out", str(tmp_path / "c")])
    assert result.exit_code == 2 and "unknown app" in result.output


def test_a_tampered_run_is_not_packaged(trained, tmp_path):
    run, _ = trained
    first = package("packaged", tmp_path / "ok")
    copied = first.out / "home" / "runs" / "packaged" / first.version
    target = next(p for p in sorted(copied.rglob("*")) if p.is_file() and p.name != "manifest.json")
    target.write_bytes(target.read_bytes() + b" ")
    with pytest.raises(LuodiError, match="modified after training"):
        registry.verify_manifest(copied)


def test_the_build_step_registers_the_run_in_a_fresh_home(trained, tmp_path, monkeypatch):
    from luodi.apps import predict
    from luodi.settings import reset_settings

    ctx = package("packaged", tmp_path / "ctx")
    home = ctx.out / "home"
    run_dir = home / "runs" / "packaged" / ctx.version
    monkeypatch.setenv("LUODI_HOME", str(home))  # what the image's build does in its LUODI_HOME
    reset_settings()
    predict.forget_loaded()
    try:
        assert package_main(["register", str(home / "package.json"), str(run_dir)]) == 0
        served = registry.get_run("packaged")
        assert (served.version, served.status, served.path) == (ctx.version, "done", run_dir)
        predictor = api.load_predictor("packaged")
        record = predictor.task.read(None).drop(columns=["target"]).iloc[:1].to_dict(orient="records")
        assert predictor.task.predict(record)[0]["label"]
        assert package_main(["register"]) == 2
    finally:
        monkeypatch.undo()
        reset_settings()
        predict.forget_loaded()
