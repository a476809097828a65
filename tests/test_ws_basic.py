"""GET /ws as issue 5 needs it: authentication, the `user` channel, errors for bad
frames, and the 1001 close at shutdown. (The full protocol is the realtime gateway's.)"""

from __future__ import annotations

import json

import pytest
from tornado.websocket import websocket_connect

from config.settings import load_settings
from hub.wiring.server import HubServer

SHARED_HUB = pytest.mark.asyncio(loop_scope="module")  # tests/conftest.py shared_api


async def connect(api, query: str = ""):
    return await websocket_connect(f"ws://127.0.0.1:{api.base_url.rsplit(':', 1)[1]}/ws{query}")


async def frame(ws) -> dict:
    message = await ws.read_message()
    assert message is not None, f"closed: {ws.close_code} {ws.close_reason}"
    return json.loads(message)


@SHARED_HUB
@pytest.mark.timeout(30)
async def test_token_in_query_joins_the_user_channel(shared_api):
    session = await shared_api.register()
    ws = await connect(shared_api, f"?token={session['access_token']}")
    await ws.write_message(json.dumps({"op": "subscribe", "channel": "user"}))
    assert await frame(ws) == {"type": "subscribed", "channel": "user", "seq": 0, "recovered": False}
    await ws.write_message(json.dumps({"op": "ping"}))
    assert await frame(ws) == {"type": "pong"}
    ws.close()


@SHARED_HUB
@pytest.mark.timeout(30)
async def test_auth_frame_then_subscribe(shared_api):
    session = await shared_api.register()
    ws = await connect(shared_api)
    await ws.write_message(json.dumps({"op": "subscribe", "channel": "user"}))
    assert (await frame(ws))["code"] == "forbidden"  # not yet authenticated: an error, still open
    await ws.write_message(json.dumps({"op": "auth", "token": session["access_token"]}))
    assert await frame(ws) == {"type": "authenticated", "user_id": session["user"]["id"]}
    await ws.write_message(json.dumps({"op": "subscribe", "channel": "user"}))
    assert (await frame(ws))["type"] == "subscribed"
    ws.close()


@SHARED_HUB
@pytest.mark.timeout(30)
async def test_a_bad_token_closes_with_4401(shared_api):
    ws = await connect(shared_api, "?token=not-a-token")
    assert await ws.read_message() is None
    assert ws.close_code == 4401


@SHARED_HUB
@pytest.mark.timeout(30)
async def test_no_auth_within_5_seconds_closes_with_4401(shared_api):
    ws = await connect(shared_api)
    assert await ws.read_message() is None
    assert ws.close_code == 4401 and ws.close_reason == "authentication_timeout"


@SHARED_HUB
@pytest.mark.timeout(30)
async def test_garbage_gets_error_frames_and_the_socket_stays_usable(shared_api):
    session = await shared_api.register()
    ws = await connect(shared_api, f"?token={session['access_token']}")
    for garbage, code in (("{not json", "malformed_json"), ("[1, 2]", "invalid_frame"), ('{"op": 5}', "invalid_frame"),
                          ('{"op": "dance"}', "unknown_op"), (b"\x00\x01", "binary_not_supported"),
                          ('{"op": "subscribe", "channel": "admin:orders"}', "forbidden"),
                          ('{"op": "subscribe", "channel": "bogus:1"}', "invalid_channel")):
        await ws.write_message(garbage, binary=isinstance(garbage, bytes))
        reply = await frame(ws)
        assert reply["type"] == "error" and reply["code"] == code, (garbage, reply)
    await ws.write_message(json.dumps({"op": "ping"}))
    assert await frame(ws) == {"type": "pong"}
    ws.close()


@SHARED_HUB
@pytest.mark.timeout(30)
async def test_a_frame_over_64_kib_closes_the_socket(shared_api):
    session = await shared_api.register()
    ws = await connect(shared_api, f"?token={session['access_token']}")
    await ws.write_message(json.dumps({"op": "ping", "pad": "x" * 70_000}))
    assert await ws.read_message() is None
    assert ws.close_code == 1009  # message too big


@pytest.mark.timeout(30)
async def test_shutdown_sends_a_jittered_reconnect_hint_and_closes_with_1001(hub_env):
    server = HubServer(load_settings(hub_env))
    await server.start()
    try:
        ws = await websocket_connect(f"ws://127.0.0.1:{server.port}/ws")
        await ws.write_message(json.dumps({"op": "ping"}))
        assert json.loads(await ws.read_message()) == {"type": "pong"}
    finally:
        await server.stop()
    hint = json.loads(await ws.read_message())
    assert hint["type"] == "reconnect" and 500 <= hint["after_ms"] <= 5000
    assert await ws.read_message() is None
    assert ws.close_code == 1001
