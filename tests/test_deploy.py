"""The deployment files, checked offline: the Kubernetes manifests against the Kubernetes
schemas (kubernetes-validate, strict) and against what the hub needs (probes, drain time,
secrets by reference, autoscaler within the partitions); the Prometheus alert rules with
`promtool check rules` and a `promtool test rules` case for every alert; the Grafana
dashboard showing every metric the hub exports; docker compose's two replicas behind the
proxy the hub trusts."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from prometheus_client import REGISTRY

import hub.metrics  # noqa: F401  (registers every metric the hub exports)
from config.settings import Settings, load_settings
from hub.server import SHUTDOWN_S

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.33.0"  # as old as managed clusters commonly still run
SECRET_SETTINGS = {"JWT_SECRET", "MONGODB_URI", "REDIS_URL", "HUB_SERVICE_KEYS", "HUB_ADMIN_PASSWORD", "SMTP_URL",
                   "STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRET", "TWILIO_AUTH_TOKEN", "VAPID_PRIVATE_KEY"}


def manifests() -> dict[str, dict]:
    found = {}
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            found[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return found


@pytest.mark.parametrize("version", [K8S_VERSION, kubernetes_validate.latest_version()])
def test_every_manifest_is_valid_against_the_kubernetes_schemas(version):
    resources = manifests()
    assert {"Deployment/hub", "Service/hub", "ConfigMap/hub-config", "HorizontalPodAutoscaler/hub",
            "PodDisruptionBudget/hub", "Ingress/hub"} <= set(resources)
    for name, resource in resources.items():
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {exc.message} at {list(exc.path)}")


def test_a_manifest_with_a_mistake_is_refused():
    """The check can fail: a misspelt field and a wrong type are caught."""
    deployment = manifests()["Deployment/hub"]
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {"httpGet": {"path": "/readyz"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_the_deployment_probes_drains_and_takes_secrets_by_reference():
    resources = manifests()
    pod = resources["Deployment/hub"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + SHUTDOWN_S + 5, "room for the SIGTERM drain"
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]

    env = {item["name"]: item for item in container["env"]}
    config = resources["ConfigMap/hub-config"]["data"]
    assert not SECRET_SETTINGS & set(config), "a secret in the ConfigMap"
    for name in SECRET_SETTINGS:
        assert set(env[name]) == {"name", "valueFrom"} and env[name]["valueFrom"]["secretKeyRef"]["name"] == "hub-secrets"

    # With the secrets filled in, the settings are accepted as production settings.
    secrets = {"JWT_SECRET": "k" * 48, "MONGODB_URI": "mongodb://a,b,c/?replicaSet=rs0", "REDIS_URL": "redis://r:6379"}
    settings = load_settings({**config, **secrets})
    assert settings.production and settings.redis_cluster
    aliases = {field.alias for field in Settings.model_fields.values()}
    assert set(env) <= aliases | {"HUB_TRUSTED_PROXIES"}, set(env) - aliases


def test_the_autoscaler_and_disruption_budget_fit_the_deployment():
    resources = manifests()
    labels = resources["Deployment/hub"]["spec"]["template"]["metadata"]["labels"]
    hpa = resources["HorizontalPodAutoscaler/hub"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "hub"}
    # More pods than partitions would idle in the consumer groups (docs/deployment.md).
    assert hpa["maxReplicas"] <= int(resources["ConfigMap/hub-config"]["data"]["HUB_KAFKA_PARTITIONS"])
    assert 2 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    pdb = resources["PodDisruptionBudget/hub"]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items() and pdb["maxUnavailable"] == 1
    assert resources["Service/hub"]["spec"]["selector"].items() <= labels.items()


# Prometheus --------------------------------------------------------------------------------
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)")


def alert_rules() -> list[dict]:
    groups = yaml.safe_load((DEPLOY / "prometheus" / "hub-alerts.yaml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


@needs_promtool
def test_the_alert_rules_pass_promtool_check():
    result = subprocess.run([PROMTOOL, "check", "rules", "hub-alerts.yaml"], cwd=DEPLOY / "prometheus",
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_every_alert_fires_in_its_promtool_test_case():
    result = subprocess.run([PROMTOOL, "test", "rules", "hub-alerts.test.yaml"], cwd=DEPLOY / "prometheus",
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    cases = yaml.safe_load((DEPLOY / "prometheus" / "hub-alerts.test.yaml").read_text())["tests"]
    fired = {check["alertname"] for case in cases for check in case["alert_rule_test"] if check["exp_alerts"]}
    assert fired == {rule["alert"] for rule in alert_rules()}


def test_the_alerts_cover_what_an_operator_must_hear_about():
    watched = " ".join(rule["expr"] for rule in alert_rules())
    for needed in ("hub_consumer_lag_messages", "hub_events_dead_lettered_total", "hub_notification_deliveries_total",
                   "hub_outbox_pending_documents", 'reason="slow_consumer"', 'status=~"5.."'):
        assert needed in watched, needed
    assert all(rule["labels"]["severity"] in ("warning", "critical") and rule["annotations"]["summary"]
               for rule in alert_rules())


# Grafana -----------------------------------------------------------------------------------
def exported_metrics() -> set[str]:
    return {metric.name for metric in REGISTRY.collect() if metric.name.startswith("hub_")}


def test_the_dashboard_shows_every_hub_metric_and_what_each_alert_watches():
    dashboard = json.loads((DEPLOY / "grafana" / "hub-dashboard.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    shown = " ".join(exprs)
    for name in exported_metrics():
        assert re.search(rf"\b{name}(_count|_bucket|_total)?\b", shown), f"{name} is on no panel"
    for rule in alert_rules():
        for name in re.findall(r"\bhub_[a-z_]+", rule["expr"]):
            assert name in shown, f"{rule['alert']}: {name} is on no panel"
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])


# docker compose ----------------------------------------------------------------------------
def test_compose_runs_two_replicas_behind_a_proxy_they_trust():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services["hub"]["deploy"]["replicas"] == 2 and "ports" not in services["hub"]
    proxy = services["proxy"]
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in proxy["volumes"]
    address = proxy["networks"]["default"]["ipv4_address"]
    assert services["hub"]["environment"]["HUB_TRUSTED_PROXIES"] == f"{address}/32"
    nginx = (DEPLOY / "nginx.conf").read_text()
    assert "server hub:8888" in nginx and "proxy_set_header Upgrade $http_upgrade;" in nginx
