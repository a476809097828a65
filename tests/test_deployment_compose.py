"""docker-compose.yml and deploy/nginx/hub.conf, checked without a Docker engine: two identical
hub replicas in production mode share MongoDB, Redis and Kafka and publish no port of their
own; the proxy is the only way in, its upstreams are exactly those replicas, WebSocket
upgrades pass through, and the hubs trust the proxy's address and no other. The replicas'
environment is a valid production configuration for the hub."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import yaml

from config.settings import load_settings
from hub.wiring.server import SHUTDOWN_S

ROOT = Path(__file__).resolve().parent.parent
HUB_SERVICES = ("hub-1", "hub-2")


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def nginx_conf() -> str:
    source = compose()["services"]["proxy"]["volumes"][0].split(":")[0]
    return re.sub(r"#[^\n]*", "", (ROOT / source).read_text())  # without comments


def interpolated(environment: dict) -> dict:
    """What compose hands the container: `${X:-}` empty, the required JWT_SECRET given."""
    values = {}
    for name, value in environment.items():
        if value.startswith("${JWT_SECRET:?"):
            value = "j" * 48
        elif re.fullmatch(r"\$\{\w+:-\}", value):
            value = ""
        assert "$" not in value, (name, value)
        values[name] = value
    return values


def test_two_identical_hub_replicas_in_production_sharing_the_services():
    services = compose()["services"]
    assert set(services) >= {"mongo", "kafka", "redis", "mailpit", "proxy", *HUB_SERVICES}
    hub_1, hub_2 = (services[name] for name in HUB_SERVICES)
    assert hub_1 == hub_2 and hub_1["build"] == "."
    env = hub_1["environment"]
    assert env["HUB_ENV"] == "production" and env["HUB_HOST"] == "0.0.0.0"
    assert env["MONGODB_URI"].startswith("mongodb://mongo:") and "replicaSet=" in env["MONGODB_URI"]
    assert env["REDIS_URL"].startswith("redis://redis:") and env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    for dependency in ("mongo", "kafka", "redis"):
        assert hub_1["depends_on"][dependency] == {"condition": "service_healthy"}
        assert "healthcheck" in services[dependency]
    assert int(hub_1["stop_grace_period"].rstrip("s")) > SHUTDOWN_S


def test_the_replicas_environment_is_a_valid_production_configuration():
    env = interpolated(compose()["services"]["hub-1"]["environment"])
    settings = load_settings(env)  # raises SettingsError naming a bad or missing setting
    assert settings.production and settings.port == 8888
    assert settings.redis_url and settings.mongodb_uri and settings.kafka_bootstrap_servers


def test_only_the_proxy_is_published_and_only_it_is_trusted():
    config = compose()
    services = config["services"]
    published = {name for name, service in services.items() if "ports" in service}
    assert published == {"proxy", "mailpit"}
    assert services["proxy"]["ports"] == ["8888:80"]
    proxy_ip = ipaddress.ip_address(services["proxy"]["networks"]["default"]["ipv4_address"])
    subnet = ipaddress.ip_network(config["networks"]["default"]["ipam"]["config"][0]["subnet"])
    assert proxy_ip in subnet
    trusted = services["hub-1"]["environment"]["HUB_TRUSTED_PROXIES"]
    assert [ipaddress.ip_address(item.strip()) for item in trusted.split(",")] == [proxy_ip]
    for name in HUB_SERVICES:
        assert services["proxy"]["depends_on"][name] == {"condition": "service_healthy"}


def test_the_proxy_sends_every_request_and_websocket_to_both_replicas():
    conf = nginx_conf()
    assert conf.count("{") == conf.count("}")
    [upstream] = re.findall(r"upstream\s+(\w+)\s*\{([^}]*)\}", conf)
    name, body = upstream
    servers = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", body, re.M)
    port = compose()["services"]["hub-1"]["environment"]["HUB_PORT"]
    assert sorted(servers) == [(service, port) for service in HUB_SERVICES]
    assert "ip_hash" not in body and "hash " not in body and "sticky" not in body  # any replica will do

    location = re.search(r"location\s+/\s*\{([^}]*)\}", conf).group(1)
    directives = {tuple(line.split(None, 1)) for line in
                  (line.strip().rstrip(";") for line in location.splitlines()) if line}
    assert ("proxy_pass", f"http://{name}") in directives
    assert ("proxy_http_version", "1.1") in directives
    assert ("proxy_set_header", "Upgrade $http_upgrade") in directives
    assert ("proxy_set_header", "Connection $connection_upgrade") in directives
    assert re.search(r"map\s+\$http_upgrade\s+\$connection_upgrade\s*\{[^}]*default\s+upgrade;", conf)
    # The client's own address, not a header it could have forged.
    assert ("proxy_set_header", "X-Forwarded-For $remote_addr") in directives
    # A WebSocket outlives many of the hub's 25 s pings.
    read_timeout = dict(d for d in directives if len(d) == 2)["proxy_read_timeout"]
    assert read_timeout.endswith("h") or int(read_timeout.rstrip("s")) > 60
