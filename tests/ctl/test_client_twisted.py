"""TwistedCommandClient against a real redis-server, on the test's reactor (pytest-twisted)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from caas_socket.app.commands import CommandError
from caas_socket.client import RedisUnavailable, TwistedCommandClient
from caas_socket.redis_connection import connect
from tests.support.redis_server import RedisServer


@pytest_twisted.ensureDeferred
async def test_every_method_publishes_the_exact_command(clean_redis: RedisServer, subscribe: Any):
    api = subscribe("caas:api")
    client = await TwistedCommandClient.connect(clean_redis.url, reactor)
    try:
        assert await client.emit_to_user("acme", "alice", "msg", {"n": 1}) == 1
        assert await client.emit_to_device("acme", "alice", "phone", "msg", "x") == 1
        assert await client.emit_to_room("acme", "chat-42", "msg") == 1
        assert await client.join("acme", "alice", "chat-42", device="phone") == 1
        assert await client.leave("acme", "alice", ["chat-42"]) == 1
        assert await client.disconnect("acme", "alice", reason="banned") == 1
    finally:
        await client.close()
    expected = [
        '{"v":1,"op":"emit","tenantId":"acme","userId":"alice","event":"msg","data":{"n":1}}',
        '{"v":1,"op":"emit","tenantId":"acme","userId":"alice","deviceId":"phone","event":"msg",'
        '"data":"x"}',
        '{"v":1,"op":"emit","tenantId":"acme","room":"chat-42","event":"msg"}',
        '{"v":1,"op":"join","tenantId":"acme","userId":"alice","deviceId":"phone",'
        '"rooms":["chat-42"]}',
        '{"v":1,"op":"leave","tenantId":"acme","userId":"alice","rooms":["chat-42"]}',
        '{"v":1,"op":"disconnect","tenantId":"acme","userId":"alice","reason":"banned",'
        '"reconnect":false}',
    ]
    assert [api.message() for _ in expected] == [(b"caas:api", e.encode()) for e in expected]
    api.nothing()


@pytest_twisted.ensureDeferred
async def test_on_a_shared_connection_with_a_prefix(clean_redis: RedisServer, subscribe: Any):
    redis = await connect(clean_redis.url, reactor, pool_size=1, timeout=1.0)
    try:
        client = TwistedCommandClient(redis, prefix="staging:", clock=reactor, timeout=0.5)
        assert await client.emit_to_user("t", "u", "e") == 0
        api = subscribe("staging:api")
        assert await client.emit_to_user("t", "u", "e") == 1
        assert api.message()[0] == b"staging:api"
        await client.close()  # not owned: the connection stays usable
        assert await redis.execute("PING") in (b"PONG", "PONG")
    finally:
        await redis.disconnect()


@pytest_twisted.inlineCallbacks
def test_usable_from_inline_callbacks(clean_redis: RedisServer, subscribe: Any):
    # Older Twisted code: Deferreds with yield, no async def.
    api = subscribe("caas:api")
    client = yield TwistedCommandClient.connect(clean_redis.url, reactor)
    received = yield client.disconnect("t", "u", "d", reason="moved", reconnect=True)
    assert received == 1
    yield client.close()
    assert json.loads(api.message()[1]) == {
        "v": 1,
        "op": "disconnect",
        "tenantId": "t",
        "userId": "u",
        "deviceId": "d",
        "reason": "moved",
        "reconnect": True,
    }


@pytest_twisted.ensureDeferred
async def test_invalid_commands_fail_before_any_io(clean_redis: RedisServer, subscribe: Any):
    api = subscribe("caas:api")
    client = await TwistedCommandClient.connect(clean_redis.url, reactor)
    try:
        with pytest.raises(CommandError) as refused:
            client.emit_to_room("t", "room", "disconnecting")
        assert refused.value.code == "invalid_field"
        with pytest.raises(CommandError):
            client.join("t", "u", [])
    finally:
        await client.close()
    api.nothing()


@pytest_twisted.ensureDeferred
async def test_unreachable_or_hung_redis_fails_within_the_timeout(clean_redis: RedisServer):
    with pytest.raises(RedisUnavailable):
        await TwistedCommandClient.connect("redis://127.0.0.1:1/0", reactor, timeout=0.3)
    client = await TwistedCommandClient.connect(clean_redis.url, reactor, timeout=0.3)
    clean_redis.pause()
    try:
        started = time.monotonic()
        with pytest.raises(RedisUnavailable, match="PUBLISH"):
            await client.emit_to_user("t", "u", "e")
        assert time.monotonic() - started < 1.0
    finally:
        clean_redis.resume()
        await client.close()


@pytest_twisted.ensureDeferred
async def test_tls(tls_redis: tuple[RedisServer, int, Path]):
    _, port, ca = tls_redis
    client = await TwistedCommandClient.connect(f"rediss://localhost:{port}/0?ca={ca}", reactor)
    try:
        assert await client.emit_to_user("t", "u", "e") == 0
    finally:
        await client.close()
    with pytest.raises(RedisUnavailable):
        await TwistedCommandClient.connect(
            f"rediss://127.0.0.1:{port}/0?ca={ca}", reactor, timeout=0.5
        )
