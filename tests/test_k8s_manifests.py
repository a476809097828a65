"""deploy/k8s: every manifest validates against the Kubernetes schemas (kubernetes-validate,
strict: an unknown or misspelled field fails), kustomization.yaml applies all of them, and the
Deployment is what docs/deployment.md says: probes on /healthz and /readyz, a grace period
that covers the preStop wait and the hub's own shutdown, resources, secrets by reference."""

from __future__ import annotations

import copy
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from hub.wiring.server import SHUTDOWN_S

K8S = Path(__file__).resolve().parent.parent / "deploy" / "k8s"
KUBERNETES_VERSION = "1.37.0"


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifests() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def resources() -> dict[str, dict]:
    return {doc["kind"]: doc for path in manifests() for doc in documents(path)}


@pytest.mark.parametrize("path", manifests(), ids=lambda p: p.name)
def test_manifest_validates_against_the_kubernetes_schemas(path):
    for doc in documents(path):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_validation_catches_a_misspelled_field():
    deployment = copy.deepcopy(resources()["Deployment"])
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_kustomization_applies_every_manifest():
    [kustomization] = documents(K8S / "kustomization.yaml")
    assert sorted(kustomization["resources"]) == sorted(p.name for p in manifests())


def test_the_deployment_matches_the_hub():
    r = resources()
    assert set(r) >= {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap"}
    deployment = r["Deployment"]
    labels = deployment["spec"]["selector"]["matchLabels"]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]

    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert {"name": "http", "containerPort": 8888, "protocol": "TCP"} in container["ports"]

    # SIGTERM comes after preStop; the hub then needs up to SHUTDOWN_S; SIGKILL only after both.
    assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    pre_stop_s = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["terminationGracePeriodSeconds"] >= pre_stop_s + SHUTDOWN_S + 5

    assert set(container["resources"]["requests"]) == {"cpu", "memory"}
    assert "memory" in container["resources"]["limits"]

    # Settings from the ConfigMap; every secret by reference, none written into the manifest.
    assert container["envFrom"] == [{"configMapRef": {"name": r["ConfigMap"]["metadata"]["name"]}}]
    secret_refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert all("value" not in e for e in container["env"])
    for required in ("MONGODB_URI", "REDIS_URL", "JWT_SECRET"):
        assert secret_refs[required] == {"name": "hub-secrets", "key": required}
    assert not any(marker in name for name in r["ConfigMap"]["data"]
                   for marker in ("SECRET", "PASSWORD", "TOKEN", "_KEY", "URI", "REDIS_URL", "SMTP_URL"))
    assert r["ConfigMap"]["data"]["HUB_ENV"] == "production" and r["ConfigMap"]["data"]["HUB_HOST"] == "0.0.0.0"

    # The Service, autoscaler and disruption budget all point at these pods.
    assert r["Service"]["spec"]["selector"] == labels
    assert r["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == labels
    assert r["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"]}
    hpa = r["HorizontalPodAutoscaler"]["spec"]
    assert 2 <= hpa["minReplicas"] <= hpa["maxReplicas"] <= int(r["ConfigMap"]["data"]["HUB_KAFKA_PARTITIONS"])
    assert r["PodDisruptionBudget"]["spec"]["maxUnavailable"] < hpa["minReplicas"]
