"""`luodi serve --ray`: the same app on Ray Serve, checked through real HTTP on a local Ray (ray.init on this
machine), and the deployment options' checks. Skips cleanly without ray[serve] (pip install 'luodi[ray]')."""

from __future__ import annotations

import os

import httpx
import pytest
import yaml
from conftest import free_port
from sklearn.datasets import load_breast_cancer

from luodi import api
from luodi.errors import ConfigError
from luodi.serve import ray_serve
from luodi.settings import get_settings


def _settings(**update):
    return get_settings().model_copy(update=update)


def test_fixed_replicas_and_autoscaling_options_come_from_settings():
    fixed = ray_serve.deployment_options(_settings(ray_min_replicas=2, ray_max_replicas=2, ray_replica_cpus=0.5))
    assert fixed["num_replicas"] == 2 and "autoscaling_config" not in fixed
    assert fixed["ray_actor_options"]["num_cpus"] == 0.5
    env = fixed["ray_actor_options"]["runtime_env"]["env_vars"]
    assert env["LUODI_HOME"] == str(get_settings().home)  # the replicas use this process's home
    auto = ray_serve.deployment_options(_settings(ray_min_replicas=0, ray_max_replicas=4,
                                                  ray_target_ongoing_requests=3, ray_max_ongoing_requests=8))
    assert "num_replicas" not in auto
    assert auto["autoscaling_config"] == {"min_replicas": 0, "max_replicas": 4, "initial_replicas": 1,
                                          "target_ongoing_requests": 3}
    assert auto["max_ongoing_requests"] == 8


def test_bad_replica_settings_name_the_setting_and_the_fix():
    with pytest.raises(ConfigError, match="ray_min_replicas .* above ray_max_replicas.*--max-replicas") as e:
        ray_serve.deployment_options(_settings(ray_min_replicas=3, ray_max_replicas=2))
    assert e.value.param == "ray_min_replicas"
    with pytest.raises(ConfigError, match="ray_target_ongoing_requests .* below ray_max_ongoing_requests"):
        ray_serve.deployment_options(_settings(ray_min_replicas=1, ray_max_replicas=3,
                                               ray_target_ongoing_requests=40, ray_max_ongoing_requests=32))


def test_an_apps_own_replicas_come_from_its_serve_block():
    from luodi.config import validate_app

    def replicas(block):
        cfg = validate_app({"name": "x", "task": "tabular", "data": {"format": "sklearn:iris"},
                            "serve": {"replicas": block}})
        return ray_serve.predictor_options("x", cfg.serve.replicas, _settings())

    fixed = replicas({"min": 2, "max": 2, "cpus": 0.5})
    assert fixed["name"] == "App-x" and fixed["num_replicas"] == 2 and "autoscaling_config" not in fixed
    assert fixed["ray_actor_options"]["num_cpus"] == 0.5
    auto = replicas({"min": 0, "max": 3, "target_ongoing_requests": 4, "max_ongoing_requests": 16})
    assert auto["autoscaling_config"] == {"min_replicas": 0, "max_replicas": 3, "initial_replicas": 1,
                                          "target_ongoing_requests": 4}
    assert auto["max_ongoing_requests"] == 16
    with pytest.raises(ConfigError, match=r"serve.replicas.*min \(3\) is above max \(2\)"):
        replicas({"min": 3, "max": 2})
    with pytest.raises(ConfigError, match="target_ongoing_requests .* must be below max_ongoing_requests"):
        replicas({"min": 1, "max": 2, "target_ongoing_requests": 8, "max_ongoing_requests": 8})


@pytest.fixture(scope="module")
def ray_server(tmp_path_factory):
    """A tiny breast-cancer app trained in the session's LUODI_HOME, then luodi on a local Ray Serve (1 replica)."""
    pytest.importorskip("ray.serve", reason="ray[serve] is not installed: pip install 'luodi[ray]'")
    import ray

    from luodi.keys import create_key

    folder = tmp_path_factory.mktemp("ray-app")
    cfg = {
        "name": "ray-diag", "task": "tabular",
        "data": {"format": "sklearn:breast_cancer", "columns": {"label": "target", "positive": "malignant"},
                 "split": {"valid": 0.25, "seed": 0}},
        "model": {"type": "lightgbm", "options": {"n_estimators": 30, "num_leaves": 8}},
        "train": {"epochs": 1, "seed": 0},
    }
    (folder / "ray-diag.yaml").write_text(yaml.safe_dump(cfg))
    api.train(folder / "ray-diag.yaml", progress=False)
    # the same app predicted on a replica of its own (serve.replicas): a second deployment behind the same routes
    own = {**cfg, "name": "ray-own", "serve": {"replicas": {"min": 1, "max": 1, "cpus": 0.25}}}
    (folder / "ray-own.yaml").write_text(yaml.safe_dump(own))
    api.train(folder / "ray-own.yaml", progress=False)
    key = create_key("pytest-ray", admin=False).key
    saved = dict(os.environ)
    os.environ.update(ray_serve.high_throughput_env())  # as `luodi serve --ray` starts a local Ray: HAProxy in front
    # HAProxy's own metrics and stats ports (9101, 8404 by default): free ones, so a Ray elsewhere cannot collide
    os.environ.update(RAY_SERVE_HAPROXY_METRICS_PORT=str(free_port()), RAY_SERVE_HAPROXY_STATS_PORT=str(free_port()))
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    try:  # the HTTP port is picked after ray.init: Ray's own processes bind random free ports too
        settings = _settings(host="127.0.0.1", port=free_port(), auth="on", ray_min_replicas=1, ray_max_replicas=1)
        url = ray_serve.deploy(settings)
        yield url, key
    finally:
        ray_serve.shutdown()
        os.environ.clear()
        os.environ.update(saved)


def test_ray_serve_answers_the_same_routes_auth_and_metrics(ray_server):
    url, key = ray_server
    health = httpx.get(f"{url}/health", timeout=30)
    assert health.status_code == 200 and health.json()["status"] == "ok" and health.json()["auth"] == "on"
    assert health.json()["engine_loaded"] is False  # the chat engine loads on first use, as in `luodi serve`

    rec = {k: float(v) for k, v in load_breast_cancer(as_frame=True).data.iloc[0].items()}
    r = httpx.post(f"{url}/v1/apps/ray-diag/predict", json=rec, timeout=60)
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = httpx.post(f"{url}/v1/apps/ray-diag/predict", json=rec, timeout=60,
                   headers={"Authorization": "Bearer not-a-key"})
    assert r.status_code == 401
    headers = {"Authorization": f"Bearer {key}"}
    r = httpx.post(f"{url}/v1/apps/ray-diag/predict", json=rec, headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["label"] == "malignant" and 0.5 < r.json()["probability"] <= 1  # row 0 is malignant
    bad = dict(rec)
    del bad["mean radius"]
    r = httpx.post(f"{url}/v1/apps/ray-diag/predict", json=bad, headers=headers, timeout=60)
    assert r.status_code == 422 and "mean radius" in r.text  # luodi's own error shape, through Ray's proxy

    metrics = httpx.get(f"{url}/metrics", timeout=30)
    assert metrics.status_code == 200
    lines = metrics.text.splitlines()
    predicted = [ln for ln in lines if ln.startswith("luodi_requests_total")
                 and "predict" in ln and 'status="200"' in ln]
    refused = [ln for ln in lines if ln.startswith("luodi_requests_total") and 'status="401"' in ln]
    assert predicted and float(predicted[0].rsplit(" ", 1)[1]) >= 1
    assert refused and float(refused[0].rsplit(" ", 1)[1]) >= 2


def test_an_app_with_serve_replicas_predicts_on_its_own_deployment(ray_server):
    from ray import serve

    url, key = ray_server
    deployments = serve.status().applications[ray_serve.APP_NAME].deployments
    assert "App-ray-own" in deployments and "App-ray-diag" not in deployments  # only the app that asked
    assert deployments["App-ray-own"].status == "HEALTHY"
    headers = {"Authorization": f"Bearer {key}"}
    data = load_breast_cancer(as_frame=True).data
    rows = [{k: float(v) for k, v in data.iloc[i].items()} for i in range(4)]
    own = serve.get_deployment_handle("App-ray-own", app_name=ray_serve.APP_NAME)
    before = own.requests.remote().result()
    here = httpx.post(f"{url}/v1/apps/ray-diag/predict", json={"inputs": rows}, headers=headers, timeout=60)
    there = httpx.post(f"{url}/v1/apps/ray-own/predict", json={"inputs": rows}, headers=headers, timeout=60)
    assert own.requests.remote().result() == before + 1  # the route handed the batch to the app's own replica
    assert here.status_code == 200 and there.status_code == 200, there.text
    assert [o["probability"] for o in there.json()["outputs"]] == pytest.approx(
        [o["probability"] for o in here.json()["outputs"]])  # the same model, trained alike: the same answers
    bad = dict(rows[0], **{"mean radius": "wide"})
    r = httpx.post(f"{url}/v1/apps/ray-own/predict", json=bad, headers=headers, timeout=60)
    assert r.status_code == 422 and "mean radius" in r.text  # validated by the server's route, as in-process
