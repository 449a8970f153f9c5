"""``caas-socketctl`` as a subprocess: options, environment, errors, the channel, token."""

from __future__ import annotations

from typing import Any

import jwt
import pytest

from caas_socket.ctl_commands import ago, count, table
from tests.ctl.conftest import run_ctl
from tests.support.redis_server import RedisServer, free_port

SECRET = "ctl-test-secret-of-at-least-32-bytes!!"


def test_help_lists_every_subcommand():
    result = run_ctl("--help")
    assert result.status == 0, result
    for name in ("token", "devices", "kick", "emit", "emit-room", "nodes", "check"):
        assert f"    {name} " in result.stdout


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("nodes",), {}, "no Redis given: pass --redis URL or set CAAS_REDIS"),
        (
            ("nodes", "--redis", "http://user:hunter2@h/0"),
            {},
            "--redis 'http://***@h/0': the scheme must be redis://",
        ),
        (("nodes",), {"CAAS_REDIS": "redis://h:99999"}, "--redis 'redis://h:99999': bad port"),
        (
            ("nodes",),
            {"CAAS_REDIS": "redis://h", "CAAS_REDIS_TIMEOUT": "soon"},
            "CAAS_REDIS_TIMEOUT: expected a positive duration",
        ),
    ],
)
def test_bad_redis_settings_exit_2_naming_the_option(args, env, message):
    result = run_ctl(*args, env=env)
    assert result.status == 2, result
    assert result.stderr.startswith("caas-socketctl nodes: ")
    assert message in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


def test_unreachable_redis_exits_1_within_the_timeout():
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    result = run_ctl("devices", "t1", "alice", "--redis", url, "--redis-timeout", "500ms")
    assert result.status == 1, result
    assert result.stderr.startswith(
        f"caas-socketctl devices: cannot reach Redis at redis://***@{url.rpartition('@')[2]}"
        " (check --redis): Redis did not answer PING within 0.5s"
    )
    assert result.stdout == ""
    assert result.seconds < 5.0


@pytest.mark.parametrize(
    ("args", "stderr"),
    [
        (("emit", "t", "u", "e", "--data", "{nope"), "argument --data: not JSON"),
        (("--redis-prefix", "has space", "nodes"), "argument --redis-prefix: expected up to 64"),
        (("emit", "t", "u", "connect"), "invalid command (invalid_field): event must be"),
        (("emit-room", "t", "r" * 300, "e"), "invalid command (invalid_field): room must be"),
    ],
)
def test_usage_errors_exit_2(clean_redis: RedisServer, args, stderr):
    result = run_ctl(*args, env={"CAAS_REDIS": clean_redis.url})
    assert result.status == 2, result
    assert stderr in result.stderr


def test_kick_and_emits_publish_the_exact_commands(clean_redis: RedisServer, subscribe: Any):
    api, second = subscribe("caas:api"), subscribe("caas:api")
    env = {"CAAS_REDIS": clean_redis.url}
    runs = [
        (("kick", "t1", "alice"), "disconnect t1/alice (reason 'kicked', stays away)"),
        (
            ("kick", "t1", "alice", "--device", "phone", "--reason", "stolen", "--reconnect"),
            "disconnect t1/alice device phone (reason 'stolen', may reconnect)",
        ),
        (("emit", "t1", "alice", "ping"), "event 'ping' to t1/alice"),
        (
            ("emit", "t1", "alice", "ping", "--device", "tv", "--data", '{"n": [1, "é"]}'),
            "event 'ping' to t1/alice device tv",
        ),
        (("emit-room", "t1", "chat-42", "news", "--data", "7"), "event 'news' to room t1/chat-42"),
    ]
    for args, what in runs:
        result = run_ctl(*args, env=env)
        assert result.status == 0, result
        assert result.stdout == f"{what}: received by 2 nodes on caas:api\n"
    expected = [
        '{"v":1,"op":"disconnect","tenantId":"t1","userId":"alice","reason":"kicked",'
        '"reconnect":false}',
        '{"v":1,"op":"disconnect","tenantId":"t1","userId":"alice","deviceId":"phone",'
        '"reason":"stolen","reconnect":true}',
        '{"v":1,"op":"emit","tenantId":"t1","userId":"alice","event":"ping"}',
        '{"v":1,"op":"emit","tenantId":"t1","userId":"alice","deviceId":"tv","event":"ping",'
        '"data":{"n":[1,"é"]}}',
        '{"v":1,"op":"emit","tenantId":"t1","room":"chat-42","event":"news","data":7}',
    ]
    for subscriber in (api, second):
        assert [subscriber.message()[1].decode() for _ in expected] == expected
        subscriber.nothing()


def test_json_output_and_nobody_listening(clean_redis: RedisServer):
    result = run_ctl("--json", "emit", "t1", "alice", "ping", "--redis", clean_redis.url)
    assert result.status == 1, result
    assert result.json() == {
        "channel": "caas:api",
        "receivers": 0,
        "command": {"v": 1, "op": "emit", "tenantId": "t1", "userId": "alice", "event": "ping"},
    }
    assert "nobody listens on caas:api: no node is running with this --redis" in result.stderr


def test_token_still_works():
    result = run_ctl("token", "--secret", SECRET, "--sub", "alice", "--tenant", "acme")
    assert result.status == 0, result
    claims = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])
    assert (claims["sub"], claims["tenantId"], claims["exp"] - claims["iat"]) == (
        "alice",
        "acme",
        3600,
    )
    env = {"CAAS_JWT_SECRET": SECRET}
    result = run_ctl("--json", "token", "--sub", "bob", "--tenant", "t", "--ttl", "60", env=env)
    assert result.status == 0, result
    out = result.json()
    assert jwt.decode(out["token"], SECRET, algorithms=["HS256"])["sub"] == "bob"
    assert (out["sub"], out["tenant"], out["ttl"]) == ("bob", "t", 60.0)
    missing = run_ctl("token", "--sub", "a", "--tenant", "t")
    assert missing.status == 1 and "give --secret-file or --secret" in missing.stderr


def test_human_formatting():
    assert ago(1_732_600_000_000, 1_732_600_012_345) == "2024-11-26 05:46:40Z (12s ago)"
    assert ago(0, 3 * 86400_000).endswith("(3d ago)")
    assert [count(1, "entry"), count(2, "entry"), count(0, "node")] == [
        "1 entry",
        "2 entries",
        "0 nodes",
    ]
    assert table(["A", "LONG"], [["xyz", "1"], ["", "22"]]).splitlines() == [
        "A    LONG",
        "xyz  1",
        "     22",
    ]
