"""The Kubernetes manifests in deploy/k8s (issue 20): every resource valid against the Kubernetes API schemas
(kubernetes-validate, strict: no unknown fields), and consistent with luodi itself: the settings they set exist,
the probes ask /health, the secrets they read are in the Secret, the autoscaler's metric is one luodi exports, the
Service and the ServiceMonitor reach the container's port. `kubectl apply --dry-run=client` too where kubectl is."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from luodi.settings import Settings

K8S = Path(__file__).resolve().parents[1] / "deploy" / "k8s"
KUBERNETES = "1.31.0"  # the oldest version the manifests are checked against; all fields exist since 1.23


def resources() -> list[dict]:
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    return [doc for name in listed for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


def by_kind(kind: str) -> list[dict]:
    return [r for r in resources() if r["kind"] == kind]


def test_every_resource_is_valid_kubernetes():
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    core = [r for r in resources() if not r["apiVersion"].startswith("monitoring.coreos.com/")]
    assert {r["kind"] for r in core} == {"Secret", "PersistentVolumeClaim", "StatefulSet", "Service", "Deployment",
                                         "HorizontalPodAutoscaler"}
    for r in core:
        kubernetes_validate.validate(r, KUBERNETES, strict=True)  # raises naming the field
    with pytest.raises(kubernetes_validate.ValidationError):  # the check can fail: a misspelt field
        kubernetes_validate.validate({**by_kind("Service")[0], "spec": {"selectr": {}}}, KUBERNETES, strict=True)


def test_the_manifests_match_luodi():
    (deploy,) = by_kind("Deployment")
    pod = deploy["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["args"][0] == "serve" and pod["securityContext"]["runAsNonRoot"] is True
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] == "/health"
    assert c["resources"]["requests"] and c["resources"]["limits"]
    fields = set(Settings.model_fields)
    settings = [e["name"] for e in c["env"] if e["name"].startswith("LUODI_")]
    assert {"LUODI_ADMIN_KEY", "LUODI_DATABASE_URL", "LUODI_HOME"} <= set(settings)
    assert all(n.removeprefix("LUODI_").lower() in fields for n in settings), settings
    (secret,) = by_kind("Secret")
    read = [e["valueFrom"]["secretKeyRef"] for r in (deploy, *by_kind("StatefulSet"))
            for cont in r["spec"]["template"]["spec"]["containers"] for e in cont["env"] if "valueFrom" in e]
    assert read and all(ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
                        for ref in read)
    (claim,) = by_kind("PersistentVolumeClaim")
    mounted = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
    assert claim["metadata"]["name"] in mounted
    (hpa,) = by_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deploy["metadata"]["name"]
    from luodi.serve.metrics import ServerMetrics

    exported = {m.name for m in ServerMetrics().registry.collect()}
    pods_metrics = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert pods_metrics == ["luodi_queue_depth"] and set(pods_metrics) <= exported
    assert {m["resource"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"} == {"cpu"}
    port_names = {p["name"] for p in c["ports"]}
    service = next(s for s in by_kind("Service") if s["metadata"]["name"] == "luodi")
    assert service["spec"]["selector"].items() <= deploy["spec"]["template"]["metadata"]["labels"].items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    (monitor,) = by_kind("ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert [e["path"] for e in monitor["spec"]["endpoints"]] == ["/metrics"]
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {p["name"] for p in service["spec"]["ports"]}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kubectl_dry_run():
    reach = subprocess.run(["kubectl", "api-versions", "--request-timeout=5s"], capture_output=True, timeout=60)
    if reach.returncode:  # even a client-side dry run asks a cluster which kinds it serves
        pytest.skip("kubectl is installed but no cluster answers (kubectl's dry run needs one for the API's kinds)")
    core = [p for p in K8S.glob("*.yaml") if p.name not in ("kustomization.yaml", "servicemonitor.yaml")]
    args = [a for p in core for a in ("-f", str(p))]
    r = subprocess.run(["kubectl", "apply", "--dry-run=client", "--validate=false", *args], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
