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
    # Handlers reach stores and the broker only through the domain's services.
    ("handlers", ("hub.stores", "hub.adapters.kafka", "hub.workers", "hub.adapters.mongo", "hub.adapters.embedded_mongo",
                  "hub.adapters.redis_client", "aiokafka", "pymongo", "motor", "bson", "redis", "mongomock")),
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
