"""deploy/prometheus and deploy/grafana: the alert rules pass `promtool check rules`, each alert
has a `promtool test rules` case, and the rules and the dashboard's queries name only metrics
that hub/wiring/metrics.py exposes (and the dashboard shows every metric an alert watches). Also the
outbox backlog gauge the HubOutboxBacklog alert reads.

promtool comes with Debian's `prometheus` package (`make test` installs it when it can); where
it is missing, the promtool tests are skipped saying so.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

import hub.wiring.metrics
from config.settings import load_settings
from hub.adapters.mongo import connect_mongo
from hub.wiring.container import build_stores
from hub.workers.outbox import OutboxRelay

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
RULES = DEPLOY / "prometheus" / "hub-alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "hub-alerts.test.yml"
DASHBOARD = DEPLOY / "grafana" / "hub-dashboard.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian: apt-get install prometheus; `make test` does it as root)")

# What an operator must hear about (issue 13), and the metric each alert reads.
REQUIRED_ALERTS = {
    "HubConsumerLagGrowing": "hub_consumer_lag_messages",
    "HubDeadLetters": "hub_events_dead_lettered_total",
    "HubDeliveriesFailing": "hub_notification_deliveries_total",
    "HubOutboxBacklog": "hub_outbox_backlog_documents",
    "HubWebSocketSendBufferCloses": "hub_websocket_closed_total",
    "HubHigh5xxRate": "hub_http_request_duration_seconds_count",
}

# PromQL words that are not metric names: functions, aggregations, keywords, and label names.
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "rate", "irate", "increase", "deriv", "delta", "histogram_quantile",
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset", "bool",
    "le", "instance", "job", "pod",
}


def exposed_series() -> set[str]:
    """The series names /metrics can carry for the metrics hub/wiring/metrics.py defines."""
    names = set()
    for metric in vars(hub.wiring.metrics).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        name = metric._name
        names |= {"counter": {f"{name}_total"}, "gauge": {name},
                  "histogram": {f"{name}_bucket", f"{name}_count", f"{name}_sum"}}[metric._type]
    return names


def label_names() -> set[str]:
    return {label for metric in vars(hub.wiring.metrics).values() if isinstance(metric, MetricWrapperBase)
            for label in metric._labelnames}


def metrics_in(expr: str) -> set[str]:
    """Metric names a PromQL expression selects: its identifiers minus PromQL's own words,
    label names, durations and Grafana's variables. Anything left must be a hub metric."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values
    expr = re.sub(r"\$\w+", "", expr)  # $__rate_interval
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    words = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr))
    return words - PROMQL_WORDS - label_names()


def alerts() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


# Rules ----------------------------------------------------------------------------------

@needs_promtool
def test_rules_pass_promtool_check():
    result = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout


@needs_promtool
def test_every_alert_fires_in_its_promtool_test_case():
    result = subprocess.run([PROMTOOL, "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_each_alert_has_a_case_that_fires_it():
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {check["alertname"] for case in cases for check in case["alert_rule_test"] if check["exp_alerts"]}
    quiet = {check["alertname"] for case in cases for check in case["alert_rule_test"] if not check["exp_alerts"]}
    names = {rule["alert"] for rule in alerts()}
    assert fired == names
    assert quiet == names  # and one where it stays quiet (not yet, or healthy series)


def test_the_alerts_an_operator_needs_are_there_and_read_hub_metrics():
    by_name = {rule["alert"]: rule for rule in alerts()}
    for name, metric in REQUIRED_ALERTS.items():
        assert metric in metrics_in(by_name[name]["expr"]), name
    exposed = exposed_series()
    for rule in alerts():
        assert metrics_in(rule["expr"]) <= exposed, rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert {"summary", "description", "runbook"} <= set(rule["annotations"])


def test_the_metric_check_catches_a_metric_that_does_not_exist():
    assert metrics_in('sum by (group) (rate(hub_events_consumed_total{outcome="x"}[5m]))') == {"hub_events_consumed_total"}
    assert not metrics_in("hub_consumer_lag_message > 0") <= exposed_series()  # misspelt
    assert not metrics_in("kafka_consumergroup_lag > 0") <= exposed_series()  # someone else's


# Dashboard ------------------------------------------------------------------------------

def test_dashboard_queries_read_only_hub_metrics_and_show_every_alerted_one():
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    exprs = dashboard_exprs()
    assert exprs
    shown = set().union(*(metrics_in(expr) for expr in exprs))
    assert shown <= exposed_series()
    assert set().union(*(metrics_in(rule["expr"]) for rule in alerts())) <= shown
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"} and panel["targets"]


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path):
    """promtool parses each query as a recording rule (Grafana's $__rate_interval as 5m)."""
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{n}", "expr": expr.replace("$__rate_interval", "5m")}
        for n, expr in enumerate(dashboard_exprs())]}]}
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# The outbox backlog gauge ---------------------------------------------------------------

class RefusingKafka:
    """Kafka that takes nothing: the outbox keeps its events."""

    class producer:
        @staticmethod
        async def send(*args, **kwargs):
            raise ConnectionError("kafka is down")

    @staticmethod
    def topic(name: str) -> str:
        return name


def backlog(topic: str) -> float | None:
    return REGISTRY.get_sample_value("hub_outbox_backlog_documents", {"topic": topic})


@pytest.mark.timeout(30)
async def test_the_outbox_backlog_gauge_counts_documents_holding_events_at_each_scan():
    db = connect_mongo(load_settings({"HUB_ENV": "test"}))["outbox_backlog_test"]
    event = {"id": "e", "type": "order.created"}
    await db.orders.insert_many([{"_id": f"o{n}", "outbox": [{"id": f"e{n}", "key": f"o{n}", "event": event}]}
                                 for n in range(3)] + [{"_id": "done", "outbox": []}])
    await db.payments.insert_one({"_id": "p1", "outbox": [{"id": "e9", "key": "p1", "event": event}]})
    await db.carts.insert_one({"_id": "c1", "outbox": [{"id": "e8", "key": "c1", "event": event}]})  # on orders too
    relay = OutboxRelay(RefusingKafka(), "/hub")
    build_stores(db, relay)  # registers the stores holding an outbox with the relay
    await relay._scan()
    assert (backlog("orders"), backlog("payments"), backlog("points"), backlog("inventory")) == (4, 1, 0, 0)
    await db.orders.update_many({}, {"$set": {"outbox": []}})  # published meanwhile
    await relay._scan()
    assert (backlog("orders"), backlog("payments")) == (1, 1)
