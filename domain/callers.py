"""Who is asking: a signed-in user, or a backend service holding an API key."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Caller:
    kind: str  # "user" or "service"
    id: str  # the user id, or "service"
    roles: frozenset[str] = frozenset()

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def is_service(self) -> bool:
        return self.kind == "service"


SERVICE = Caller(kind="service", id="service")
