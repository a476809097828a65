"""What may import what (docs/architecture.md), read from the source: no hub is started.

Every import counts, also one inside a function or under TYPE_CHECKING."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# (folder, modules it must not import: a name and everything under it)
RULES = [
    ("domain", ("hub", "handlers", "channels", "tornado", "pymongo", "redis", "aiokafka")),
    ("channels", ("handlers", "hub.wiring")),
    ("hub/live", ("handlers",)),
    ("hub/stores", ("handlers", "channels", "hub.live", "hub.workers")),
    ("hub/adapters", ("handlers", "channels", "hub.live", "hub.workers", "hub.stores")),
]

# Imports that break a rule today and are being removed (issue 14 item 3 breaks the
# domain ↔ channels circle); each is listed so that no new one slips in meanwhile.
KNOWN = {("domain/notifications.py", "channels.base")}


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
        broken.update(f"{relative} imports {name}" for name in bad if (relative, name) not in KNOWN)
    assert not broken, "\n".join(sorted(broken))


def test_known_exceptions_are_still_there():
    """An exception that is gone must leave KNOWN too (else the list hides a new one)."""
    for relative, name in KNOWN:
        assert name in imports(ROOT / relative), f"{relative} no longer imports {name}: remove it from KNOWN"
