"""Liveness, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from handlers.base import BaseHandler


class HealthHandler(BaseHandler):
    openapi = {"get": {"summary": "Liveness: the process answers", "auth": None}}

    def get(self) -> None:
        self.send({"status": "ok"})


class ReadyHandler(BaseHandler):
    openapi = {"get": {"summary": "Readiness: MongoDB, Redis and Kafka answer (503 if one does not)", "auth": None}}

    async def get(self) -> None:
        checks = await self.application.settings["health"]()
        self.send({name: "up" if ok else "down" for name, ok in checks.items()}, 200 if all(checks.values()) else 503)


class MetricsHandler(BaseHandler):
    openapi = {"get": {"summary": "Prometheus metrics (text format)", "auth": None}}

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest())


class OpenApiHandler(BaseHandler):
    openapi = {"get": {"summary": "This document", "auth": None}}

    def get(self) -> None:
        self.send(self.application.settings["openapi"])
