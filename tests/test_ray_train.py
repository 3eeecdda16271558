"""`luodi train APP.yaml --backend ray --workers N`: torch tasks trained data-parallel on Ray Train (DDP over gloo
on CPU) into the same run registry as a local train, then served by the same predictor.

Quality bound: a tiny CNN on scikit-learn's 8x8 digits (1,347 train / 450 validation images, 6 epochs). Trained
locally with seeds 0-3 it scores 0.951-0.964 validation accuracy; on Ray with 1 and with 2 workers, seeds 0-5,
0.955-0.984 (docs/ray.md). Runs with different seeds, or with different workers (another shuffle of the same
rows), differ by up to about 0.03: the binomial standard error of one accuracy on 450 images is already 0.009
(0.013 for a difference), plus the seed's own spread. So one 2-worker run is held to within 0.05 of the local
run (about 3.5 standard errors), and both to at least 0.92 (a broken DDP run, e.g. unsynchronised replicas or one
worker's shard only, falls far below: 2 epochs reach 0.75). The slow test compares means over 3 seeds.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from luodi.errors import ConfigError

pytest.importorskip("ray.train.torch", reason="Ray Train is not installed: pip install 'luodi[ray]'")

APP = """\
name: {name}
task: image-classification
data:
  format: sklearn:digits
  split: {{valid: 0.25, seed: 0}}
model:
  type: cnn
  options: {{width: 8, dropout: 0.1}}
train:
  epochs: 6
  lr: 0.01
  batch_size: 64
  early_stopping: 5
evaluate:
  metrics: [accuracy]
"""


def _app(tmp_path: Path, name: str) -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(APP.format(name=name))
    return p


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray of 2 CPUs for the module (luodi joins a running Ray instead of starting its own)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR)
    yield
    ray.shutdown()


def test_bad_backend_options_fail_before_anything_starts(tmp_path):
    from typer.testing import CliRunner

    from luodi.apps import registry
    from luodi.apps.train import train
    from luodi.cli import app

    digits = _app(tmp_path, "ray-checks")
    with pytest.raises(ConfigError, match="--workers must be at least 1"):
        train(digits, backend="ray", workers=0)
    cpus = os.cpu_count() or 1  # no Ray runs yet: the local Ray that would start sees them all
    with pytest.raises(ConfigError, match=f"--workers {cpus + 1} is more than the {cpus} CPUs Ray sees"):
        train(digits, backend="ray", workers=cpus + 1)
    with pytest.raises(ConfigError, match="unknown; use local or ray"):
        train(digits, backend="spark")
    with pytest.raises(ConfigError, match="apply to --backend ray"):
        train(digits, workers=2)
    private = {"train.privacy": {"epsilon": 3.0, "max_grad_norm": 0.1}}
    with pytest.raises(ConfigError, match=r"--backend ray: DP-SGD \(train.privacy\)") as e:
        train(digits, backend="ray", overrides=private)
    assert e.value.param == "backend"
    examples = Path(__file__).parents[1] / "examples"
    with pytest.raises(ConfigError, match="--backend ray: task tabular with model.type lightgbm does not train"):
        train(examples / "income.yaml", backend="ray", overrides={"model.type": "lightgbm"})
    assert not [r for r in registry.list_runs() if r.app in ("ray-checks", "income")]
    r = CliRunner().invoke(app, ["train", str(digits), "--backend", "ray", "--workers", "0"])
    assert r.exit_code == 2, r.output
    assert "--workers must be at least 1" in r.output


def test_two_workers_train_a_served_run_as_good_as_local(local_ray, tmp_path):
    from luodi import crypto
    from luodi.apps.configs import load_app
    from luodi.apps.predict import predict
    from luodi.apps.train import train
    from luodi.tasks import task_for

    local = train(_app(tmp_path, "digits-local"), progress=False)
    on_ray = train(_app(tmp_path, "digits-ray"), progress=False, backend="ray", workers=2)
    a, b = local.metrics["accuracy"], on_ray.metrics["accuracy"]
    assert a >= 0.92 and b >= 0.92, (a, b)
    assert abs(a - b) <= 0.05, (a, b)
    # the same run layout: config, weights, metrics, report, manifest; no checkpoint or Ray files left behind
    files = {p.name for p in on_ray.path.iterdir()}
    assert files == {p.name for p in local.path.iterdir()}, files
    assert "checkpoint" not in files
    metrics = crypto.read_json(on_ray.path / "metrics.json")
    assert metrics["valid"]["accuracy"] == pytest.approx(b) and metrics["train_rows"] == 1347
    assert "<h2>Training curves</h2>" in crypto.read_text(on_ray.path / "report.html")  # rank 0's epoch history
    assert on_ray.status == "done"
    # it serves: the predictor loads the run and reads held-out digits
    task = task_for(load_app(_app(tmp_path, "digits-ray")))
    _, valid = task.split(task.read(None))
    got = predict("digits-ray", [{"image": img.tolist()} for img in valid.x[:40]])
    hits = sum(str(g["label"]) == str(y) for g, y in zip(got, valid.y[:40], strict=True))
    assert hits >= 34, hits


def test_more_workers_than_cpus_is_a_clear_error(local_ray, tmp_path):
    from luodi.apps.train import train

    with pytest.raises(ConfigError, match="--workers 3 is more than the 2 CPUs Ray sees") as e:
        train(_app(tmp_path, "digits-too-many"), progress=False, backend="ray", workers=3)
    assert e.value.param == "workers"


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("LUODI_SLOW") != "1", reason="6 Ray trainings (~5 min on 2 cores): set LUODI_SLOW=1")
def test_one_and_two_workers_reach_the_same_quality(local_ray, tmp_path):
    """Means over seeds 0-2: the 1- and 2-worker runs within 0.025 (the standard error of a mean of 3 runs'
    difference is about 0.01 here), a worker's luodi error reaching the caller as itself."""
    from luodi.apps.train import train
    from luodi.train.ray_backend import run_workers

    acc: dict[int, list[float]] = {1: [], 2: []}
    for seed in range(3):
        for workers in (1, 2):
            run = train(
                _app(tmp_path, f"digits-w{workers}"),
                progress=False,
                backend="ray",
                workers=workers,
                overrides={"train.seed": seed},
            )
            acc[workers].append(run.metrics["accuracy"])
    mean = {w: sum(v) / len(v) for w, v in acc.items()}
    assert min(mean.values()) >= 0.94, acc
    assert abs(mean[1] - mean[2]) <= 0.025, acc

    def fails(rank: int) -> None:
        raise ConfigError("a bad setting, found in a worker", param="model.options")

    with pytest.raises(ConfigError, match="found in a worker"):
        run_workers(fails, workers=2, storage=tmp_path / "ray", home=Path(os.environ["LUODI_HOME"]))
