"""The shape of the code (docs/architecture.md): handlers reach the stores and the broker only
through the domain's services, and the domain depends on no channel, store or framework.
Read from the source (ast), nothing is run."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What only hub/ (stores, the relay, the connections) may talk to.
INFRASTRUCTURE = ("hub.stores", "hub.adapters.kafka", "hub.workers.outbox", "hub.adapters.mongo", "hub.adapters.redis_client", "aiokafka", "pymongo",
                  "motor", "bson", "redis", "mongomock")
# The domain is business rules: no delivery channel, no part of hub/ or of the web layer.
NOT_IN_DOMAIN = ("channels", "hub", "handlers", "tornado", *INFRASTRUCTURE)
# Connections on the Hub object (hub/wiring/lifecycle.py) besides its stores.
CONNECTIONS = {"db", "mongo_client", "redis", "kafka", "relay", "broker"}


def imported(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    return names


def within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def hub_stores() -> set[str]:
    """The Hub attributes holding a store: `self.x = SomeStore(...)` with SomeStore from hub.stores."""
    tree = ast.parse((ROOT / "hub" / "lifecycle.py").read_text())
    store_classes = {alias.asname or alias.name for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hub.stores")
                     for alias in node.names}
    return {target.attr for node in ast.walk(tree) if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call) and getattr(node.value.func, "id", None) in store_classes
            for target in node.targets if isinstance(target, ast.Attribute)}


def test_handlers_import_no_store_broker_or_database_client():
    found = [(path.name, name) for path in sorted((ROOT / "handlers").glob("*.py"))
             for name in imported(path) if within(name, INFRASTRUCTURE)]
    assert found == []


def test_handlers_use_no_store_or_connection_of_the_hub():
    reserved = hub_stores() | CONNECTIONS
    assert {"users", "order_store", "topic_store", "outbox_store"} <= reserved  # the lookup sees the stores
    found = [(path.name, node.lineno, node.attr) for path in sorted((ROOT / "handlers").glob("*.py"))
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Attribute) and node.attr in reserved
             and isinstance(node.value, ast.Attribute) and node.value.attr == "hub"]
    assert found == []


def test_the_domain_imports_no_channel_store_or_framework():
    found = [(path.name, name) for path in sorted((ROOT / "domain").glob("*.py"))
             for name in imported(path) if within(name, NOT_IN_DOMAIN)]
    assert found == []
