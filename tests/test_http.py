"""HTTP conventions every endpoint shares: error shape, bad input, size limit, ops endpoints."""

from __future__ import annotations

import pytest


REGISTER = "/api/v1/auth/register"
SHARED_HUB = pytest.mark.asyncio(loop_scope="module")  # tests/conftest.py shared_api


def assert_error_shape(r, status, code=None):
    assert r.status == status, r
    error = r.data["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str) and "details" in error
    if code:
        assert error["code"] == code


@SHARED_HUB
async def test_malformed_json_is_400(shared_api):
    for body in (b"{not json", b"\xff\xfe", b'{"email": "a@b.co",'):
        r = await shared_api.call("POST", REGISTER, body=body, headers={"Content-Type": "application/json"})
        assert_error_shape(r, 400, "malformed_json")


@SHARED_HUB
async def test_wrong_types_and_missing_fields_are_422_naming_each_field(shared_api):
    r = await shared_api.call("POST", REGISTER, {"email": 42, "password": ["x"], "timezone": 3})
    assert_error_shape(r, 422, "validation_failed")
    assert {d["field"] for d in r.data["error"]["details"]} == {"email", "password", "timezone"}
    r = await shared_api.call("POST", REGISTER, {})
    assert {d["field"] for d in r.data["error"]["details"]} == {"email", "password"}
    r = await shared_api.call("POST", REGISTER, [1, 2])
    assert_error_shape(r, 422)
    r = await shared_api.call("POST", REGISTER, {"email": "not-an-email", "password": "short"})
    assert {d["field"] for d in r.data["error"]["details"]} == {"email", "password"}


@SHARED_HUB
async def test_empty_body_is_422_not_500(shared_api):
    r = await shared_api.call("POST", REGISTER, body=b"")
    assert_error_shape(r, 422)


async def test_body_over_one_mebibyte_is_413_and_nothing_is_created(api, hub_server):
    big = b'{"email": "big@example.com", "password": "correct-horse", "name": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    r = await api.call("POST", REGISTER, body=big, headers={"Content-Type": "application/json"})
    assert_error_shape(r, 413, "body_too_large")
    assert await hub_server.hub.db["users"].count_documents({"email": "big@example.com"}) == 0
    # The server is still fine afterwards.
    assert (await api.call("GET", "/healthz")).status == 200


@SHARED_HUB
async def test_chunked_body_over_the_limit_is_413(shared_api):
    async def producer(write):
        for _ in range(40):
            await write(b"x" * 65536)

    from tornado.httpclient import HTTPRequest

    response = await shared_api.client.fetch(HTTPRequest(
        shared_api.base_url + REGISTER, method="POST", body_producer=producer,
        headers={"Content-Type": "application/json"}), raise_error=False)
    assert response.code == 413


@SHARED_HUB
async def test_unknown_route_and_wrong_method(shared_api):
    assert_error_shape(await shared_api.call("GET", "/api/v1/nothing-here"), 404, "route_not_found")
    assert_error_shape(await shared_api.call("POST", "/nope", {"a": 1}), 404, "route_not_found")
    assert_error_shape(await shared_api.call("DELETE", "/api/v1/auth/login"), 405, "method_not_allowed")
    assert_error_shape(await shared_api.call("BREW", "/api/v1/auth/login"), 405, "method_not_allowed")


@SHARED_HUB
async def test_health_ready_and_metrics(shared_api):
    r = await shared_api.call("GET", "/healthz")
    assert r.status == 200 and r.data == {"status": "ok"}
    r = await shared_api.call("GET", "/readyz")
    assert r.status == 200 and r.data == {"mongo": "up", "redis": "up", "kafka": "up"}
    r = await shared_api.call("GET", "/metrics")
    assert r.status == 200
    assert 'hub_http_request_duration_seconds_count{handler="ReadyHandler",method="GET",status="200"}' in r.data
    assert 'hub_http_request_duration_seconds_bucket{handler="HealthHandler",le="0.002",method="GET",status="200"}' in r.data


async def test_readyz_is_503_when_a_dependency_is_down(api, hub_server):
    await hub_server.hub.redis.aclose()
    hub_server.hub.redis = _BrokenRedis()
    r = await api.call("GET", "/readyz")
    assert r.status == 503 and r.data["redis"] == "down" and r.data["mongo"] == "up"


class _BrokenRedis:
    async def ping(self):
        raise ConnectionError("redis is gone")

    async def aclose(self):
        pass


@SHARED_HUB
async def test_request_id_is_echoed_or_made(shared_api):
    r = await shared_api.call("GET", "/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["X-Request-ID"] == "abc-123"
    r = await shared_api.call("GET", "/healthz")
    assert len(r.headers["X-Request-ID"]) == 32
    r = await shared_api.call("GET", "/nope", headers={"X-Request-ID": "err-1"})
    assert r.status == 404 and r.headers["X-Request-ID"] == "err-1"


@SHARED_HUB
async def test_openapi_lists_every_route_with_body_schemas(shared_api):
    r = await shared_api.call("GET", "/api/v1/openapi.json")
    assert r.status == 200 and r.data["openapi"].startswith("3.1")
    paths = r.data["paths"]
    for path in ("/healthz", "/readyz", "/api/v1/auth/register", "/api/v1/auth/login", "/api/v1/auth/refresh", "/api/v1/users/me"):
        assert path in paths, path
    register = paths["/api/v1/auth/register"]["post"]
    ref = register["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = r.data["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert set(schema["required"]) == {"email", "password"}
    assert paths["/api/v1/users/me"]["patch"]["security"] == [{"bearer": []}]


async def test_cors_only_for_configured_origins(hub_env):
    from config.settings import load_settings
    from hub.wiring.server import HubServer
    from tests.conftest import Api

    hub_env["HUB_CORS_ORIGINS"] = "https://shop.example.com"
    server = HubServer(load_settings(hub_env))
    await server.start()
    try:
        api = Api(f"http://127.0.0.1:{server.port}")
        ok = await api.call("OPTIONS", "/api/v1/auth/login", headers={"Origin": "https://shop.example.com"})
        assert ok.status == 204
        assert ok.headers["Access-Control-Allow-Origin"] == "https://shop.example.com"
        assert "Authorization" in ok.headers["Access-Control-Allow-Headers"]
        other = await api.call("OPTIONS", "/api/v1/auth/login", headers={"Origin": "https://evil.example.com"})
        assert "Access-Control-Allow-Origin" not in other.headers
    finally:
        await server.stop()

