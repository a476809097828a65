"""What may import what (docs/architecture.md), read from the source: no hub is started.

Every import counts, also one inside a function or under TYPE_CHECKING."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# (folder, modules it must not import: a name and everything under it)
RULES = [
    ("domain", ("hub", "handlers", "channels", "tornado", "pymongo", "motor", "bson", "mongomock", "redis",
                "aiokafka")),
    # Handlers reach stores, adapters and the broker only through the domain's services; the
    # errors they answer with are the domain's (handlers/errors.py).
    ("handlers", ("hub.stores", "hub.adapters", "hub.workers", "aiokafka", "pymongo", "motor", "bson", "redis",
                  "mongomock")),
    ("channels", ("handlers", "hub.wiring")),
    ("hub/live", ("handlers",)),
    ("hub/stores", ("handlers", "channels", "hub.live", "hub.workers")),
    ("hub/adapters", ("handlers", "channels", "hub.live", "hub.workers", "hub.stores")),
]


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


@pytest.mark.parametrize("folder,forbidden", RULES, ids=[folder for folder, _ in RULES])
def test_folder_imports_only_what_it_may(folder, forbidden):
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, folder
    broken = set()
    for path in files:
        relative = path.relative_to(ROOT).as_posix()
        bad = {name for name in imports(path) if any(under(name, package) for package in forbidden)}
        # `from channels.base import X` is reported once, as channels.base.
        bad = {name for name in bad if name.rsplit(".", 1)[0] not in bad}
        broken.update(f"{relative} imports {name}" for name in bad)
    assert not broken, "\n".join(sorted(broken))


def test_handlers_reach_no_store():
    """The application hands handlers the settings and the services, not the stores."""
    found = [f"{path.name}:{node.lineno}" for path in sorted((ROOT / "handlers").glob("*.py"))
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Attribute) and node.attr == "stores"
             or isinstance(node, ast.Constant) and node.value == "stores"]
    assert found == []


def test_workers_index_no_database():
    """Workers read and write collections through the stores (hub/stores), never `db[...]`."""
    found = [f"{path.name}:{node.lineno}" for path in sorted((ROOT / "hub" / "workers").glob("*.py"))
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Subscript) and (isinstance(node.value, ast.Name) and node.value.id == "db"
                                                     or isinstance(node.value, ast.Attribute) and node.value.attr == "db")]
    assert found == []


# What handlers may call in `services` beside the domain's rules (docs/architecture.md).
HANDLER_SERVICES_BESIDE_DOMAIN = {"hub.adapters.ratelimit", "hub.live.realtime"}


def test_handlers_call_only_domain_services():
    """Of `services`, handlers use the domain's (and the rate limiter, the live fan-out): never a
    delivery channel or a gateway. A field's module is read from hub/wiring/container.py."""
    container = ast.parse((ROOT / "hub" / "wiring" / "container.py").read_text())
    module_of_name = {alias.asname or alias.name: node.module for node in container.body
                      if isinstance(node, ast.ImportFrom) for alias in node.names}
    services = next(node for node in container.body if isinstance(node, ast.ClassDef) and node.name == "Services")
    module_of_field = {field.target.id: module_of_name.get(next(n.id for n in ast.walk(field.annotation)
                                                                if isinstance(n, ast.Name)))
                       for field in services.body if isinstance(field, ast.AnnAssign)}
    found = set()
    for path in sorted((ROOT / "handlers").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and (
                    isinstance(node.value, ast.Attribute) and node.value.attr == "services"
                    or isinstance(node.value, ast.Name) and node.value.id == "services"):
                module = module_of_field.get(node.attr)
                if not (module and (under(module, "domain") or module in HANDLER_SERVICES_BESIDE_DOMAIN)):
                    found.add(f"{path.name} uses services.{node.attr} ({module or 'not a domain service'})")
    assert not found, "\n".join(sorted(found))


def test_handlers_take_from_the_wiring_only_what_the_architecture_names():
    """The Prometheus registry (metrics), client_ip, openapi's bounds, and the container's
    Services as a type; never the Hub, the app or anything that builds (docs/architecture.md)."""
    allowed = ("hub.wiring.metrics", "hub.wiring.client_ip", "hub.wiring.openapi", "hub.wiring.container.Services")
    found = sorted(f"{path.name} imports {name}" for path in sorted((ROOT / "handlers").glob("*.py"))
                   for name in imports(path)
                   if under(name, "hub.wiring") and not any(under(name, a) or under(a, name) for a in allowed))
    assert found == []
