"""The blocking CommandClient against a real redis-server: exact payloads, failures, TLS."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from caas_socket.app.commands import CommandError, decode_command
from caas_socket.client import CommandClient, RedisUnavailable
from tests.support.redis_server import RedisServer


def test_every_method_publishes_the_exact_command(clean_redis: RedisServer, subscribe: Any):
    api = subscribe("caas:api")
    with CommandClient(clean_redis.url) as client:
        assert client.emit_to_user("acme", "alice", "msg", {"text": "hé"}) == 1
        assert client.emit_to_device("acme", "alice", "phone", "msg") == 1
        assert client.emit_to_room("acme", "chat-42", "msg", [1, None]) == 1
        assert client.join("acme", "alice", ["chat-42", "chat-43", "chat-42"]) == 1
        assert client.leave("acme", "alice", "chat-42", device="phone") == 1
        assert client.disconnect("acme", "alice") == 1
        assert client.disconnect("acme", "alice", "phone", reason="logout", reconnect=True) == 1
    expected = [
        '{"v":1,"op":"emit","tenantId":"acme","userId":"alice","event":"msg","data":{"text":"hé"}}',
        '{"v":1,"op":"emit","tenantId":"acme","userId":"alice","deviceId":"phone","event":"msg"}',
        '{"v":1,"op":"emit","tenantId":"acme","room":"chat-42","event":"msg","data":[1,null]}',
        '{"v":1,"op":"join","tenantId":"acme","userId":"alice","rooms":["chat-42","chat-43"]}',
        '{"v":1,"op":"leave","tenantId":"acme","userId":"alice","deviceId":"phone",'
        '"rooms":["chat-42"]}',
        '{"v":1,"op":"disconnect","tenantId":"acme","userId":"alice","reason":"disconnected",'
        '"reconnect":false}',
        '{"v":1,"op":"disconnect","tenantId":"acme","userId":"alice","deviceId":"phone",'
        '"reason":"logout","reconnect":true}',
    ]
    for line in expected:
        channel, payload = api.message()
        assert channel == b"caas:api"
        assert payload == line.encode()
        decode_command(payload)  # and a node accepts it
    api.nothing()


def test_the_count_says_how_many_nodes_listen(clean_redis: RedisServer, subscribe: Any):
    client = CommandClient(clean_redis.url)
    assert client.emit_to_user("t", "u", "e") == 0  # nobody listens: the caller can tell
    subscribe("caas:api"), subscribe("caas:api")
    assert client.emit_to_user("t", "u", "e") == 2
    client.close()


def test_the_prefix_names_the_channel(clean_redis: RedisServer, subscribe: Any):
    other = subscribe("staging:api")
    default = subscribe("caas:api")
    assert CommandClient(clean_redis.url, prefix="staging:").emit_to_user("t", "u", "e") == 1
    assert other.message()[0] == b"staging:api"
    default.nothing()


@pytest.mark.parametrize(
    ("call", "code"),
    [
        (lambda c: c.emit_to_user("t", "u", "connect"), "invalid_field"),  # reserved event
        (lambda c: c.emit_to_user("", "u", "e"), "invalid_field"),
        (lambda c: c.emit_to_user("t", "u", "e", {"bytes": b"x"}), "invalid_field"),
        (lambda c: c.emit_to_user("t", "u", "e", float("nan")), "invalid_field"),
        (lambda c: c.emit_to_room("t", "r" * 257, "e"), "invalid_field"),
        (lambda c: c.join("t", "u", []), "invalid_field"),
        (lambda c: c.join("t", "u", [f"r{i}" for i in range(101)]), "invalid_field"),
        (lambda c: c.leave("t", "u", [1]), "invalid_field"),
        (lambda c: c.disconnect("t", "u", reason=5), "invalid_field"),
        (lambda c: c.send({"op": "shout", "tenantId": "t"}), "invalid_op"),
        (lambda c: c.send({"v": 2, "op": "emit"}), "unsupported_version"),
    ],
)
def test_invalid_commands_fail_before_any_io(call: Any, code: str):
    # The URL points nowhere: validation must refuse before connecting.
    client = CommandClient("redis://127.0.0.1:1/0", timeout=0.2)
    with pytest.raises(CommandError) as refused:
        call(client)
    assert refused.value.code == code


def test_survives_a_restart_between_calls(clean_redis: RedisServer, subscribe: Any):
    client = CommandClient(clean_redis.url)
    assert client.emit_to_user("t", "u", "before") == 0
    clean_redis.restart()  # the idle connection is dead now
    api = subscribe("caas:api")
    assert client.emit_to_user("t", "u", "after") == 1
    assert json.loads(api.message()[1])["event"] == "after"
    api.nothing()  # sent once, not repeated


def test_down_or_hung_redis_fails_within_the_timeout(clean_redis: RedisServer):
    client = CommandClient(clean_redis.url, timeout=0.5)
    client.ping()
    clean_redis.pause()
    try:
        started = time.monotonic()
        with pytest.raises(RedisUnavailable, match=r"did not answer PUBLISH within 0.5s"):
            client.emit_to_user("t", "u", "e")
        assert time.monotonic() - started < 1.5
    finally:
        clean_redis.resume()
    assert client.emit_to_user("t", "u", "e") == 0  # a fresh connection after the timeout
    with pytest.raises(RedisUnavailable, match=r"cannot connect to redis://127.0.0.1:1/0"):
        CommandClient("redis://127.0.0.1:1/0", timeout=0.5).ping()


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A server of this test alone: it gets passwords, which the module's must not keep."""
    server = RedisServer()
    server.start()
    yield server
    server.close()


def test_password_user_and_database(private_redis: RedisServer):
    port = private_redis.port
    private_redis.command("ACL", "SETUSER", "svc", "on", ">s3cret", "+@all", "~*", "&*")
    private_redis.command("CONFIG", "SET", "requirepass", "default-pw")
    with CommandClient(f"redis://svc:s3cret@127.0.0.1:{port}/3") as client:
        assert client.emit_to_user("t", "u", "e") == 0
        me = client._call("CLIENT", "INFO")  # the connection's own state
        assert b" user=svc " in me and b" db=3 " in me
    with CommandClient(f"redis://:default-pw@127.0.0.1:{port}") as client:
        assert client.emit_to_user("t", "u", "e") == 0
    with pytest.raises(RedisUnavailable) as refused:
        CommandClient(f"redis://svc:wrong-pw@127.0.0.1:{port}/0").ping()
    assert "WRONGPASS" in str(refused.value) and "wrong-pw" not in str(refused.value)
    with pytest.raises(RedisUnavailable, match="NOAUTH"):
        CommandClient(f"redis://127.0.0.1:{port}/0").emit_to_user("t", "u", "e")


def test_tls_checks_the_host_name(tls_redis: tuple[RedisServer, int, Path]):
    _, port, ca = tls_redis
    with CommandClient(f"rediss://localhost:{port}/0?ca={ca}") as client:
        assert client.emit_to_user("t", "u", "e") == 0
    with pytest.raises(RedisUnavailable, match=r"(?i)certificate|hostname|IP address mismatch"):
        CommandClient(f"rediss://127.0.0.1:{port}/0?ca={ca}").ping()  # names localhost only
    with pytest.raises(RedisUnavailable, match=r"(?i)certificate"):
        CommandClient(f"rediss://localhost:{port}/0").ping()  # our CA is not a platform CA


def test_sentinel_names_the_master(clean_redis: RedisServer, subscribe: Any):
    sentinel = RedisServer(
        config=[f"sentinel monitor mymaster {clean_redis.host} {clean_redis.port} 1"],
        sentinel=True,
    )
    sentinel.start()
    try:
        api = subscribe("caas:api")
        url = f"redis+sentinel://127.0.0.1:1,{sentinel.host}:{sentinel.port}/mymaster/0"
        with CommandClient(url, timeout=1.0) as client:  # the first Sentinel is down
            assert client.emit_to_user("t", "u", "e") == 1
        assert json.loads(api.message()[1])["event"] == "e"
        with pytest.raises(RedisUnavailable, match="does not know 'nobody'"):
            CommandClient(f"redis+sentinel://{sentinel.host}:{sentinel.port}/nobody").ping()
    finally:
        sentinel.close()


def test_one_client_is_shared_by_threads(clean_redis: RedisServer, subscribe: Any):
    api = subscribe("caas:api")
    client = CommandClient(clean_redis.url)
    counts: list[int] = []

    def work(n: int) -> None:
        counts.extend(client.emit_to_user("t", "u", "e", {"n": n, "i": i}) for i in range(50))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert counts == [1] * 200
    seen = [json.loads(api.message()[1])["data"] for _ in range(200)]
    for n in range(4):  # each thread's commands arrive in its order
        assert [d["i"] for d in seen if d["n"] == n] == list(range(50))
    client.close()
