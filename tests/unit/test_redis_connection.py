"""``--redis`` URL parsing and the bounded pool, on a memory reactor (no Redis)."""

from __future__ import annotations

from pathlib import Path

import pytest
import txredisapi
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from caas_socket.redis_connection import LuaScript, RedisConnection, RedisURL, open_pool
from caas_socket.registry.interfaces import RegistryUnavailable

# -- URL parsing ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("redis://localhost", RedisURL(hosts=(("localhost", 6379),))),
        ("redis://10.0.0.5:6380/2", RedisURL(hosts=(("10.0.0.5", 6380),), db=2)),
        ("redis://:s3cr%40t@h:1/", RedisURL(hosts=(("h", 1),), password="s3cr@t")),
        (
            "redis://app:pw@h:1/0",
            RedisURL(hosts=(("h", 1),), username="app", password="pw"),
        ),
        ("redis://[::1]:7000/3", RedisURL(hosts=(("::1", 7000),), db=3)),
        ("REDIS://h", RedisURL(hosts=(("h", 6379),))),
        ("rediss://cache.internal:6380", RedisURL(hosts=(("cache.internal", 6380),), tls=True)),
        (
            "rediss://h:1/0?ca=/etc/ca.pem",
            RedisURL(hosts=(("h", 1),), tls=True, ca_file="/etc/ca.pem"),
        ),
        (
            "redis+sentinel://:pw@s1:26379,s2,[::1]:5/mymaster",
            RedisURL(
                hosts=(("s1", 26379), ("s2", 26379), ("::1", 5)),
                password="pw",
                service_name="mymaster",
            ),
        ),
        (
            "redis+sentinel://s1:1/mymaster/4?sentinel_password=spw",
            RedisURL(hosts=(("s1", 1),), service_name="mymaster", db=4, sentinel_password="spw"),
        ),
    ],
)
def test_parse(text: str, expected: RedisURL) -> None:
    assert RedisURL.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("http://h:1", "scheme"),
        ("h:6379", "scheme"),
        ("redis://", "host is missing"),
        ("redis://:6379", "host is missing"),
        ("redis://h:0", "bad port"),
        ("redis://h:70000", "bad port"),
        ("redis://h:port", "bad port"),
        ("redis://h/one", "database must be a number"),
        ("redis://h/1/2", "database must be a number"),
        ("redis://h1,h2/0", "several hosts"),
        ("redis://h/0?ca=/x.pem", "only meaningful with rediss"),
        ("redis://h/0?timeout=3", "unknown query parameter"),
        ("rediss://h/0?ca=", "exactly one non-empty value"),
        ("rediss://h/0?ca=a&ca=b", "exactly one non-empty value"),
        ("redis://h/0?sentinel_password=x", r"only meaningful with redis\+sentinel"),
        ("redis+sentinel://s1,s2", "needs the service name"),
        ("redis+sentinel://s1/", "needs the service name"),
        ("redis+sentinel://s1/m/x", "database must be a number"),
        ("redis://[::1/0", "IPv6"),
        ("redis://h/0#frag", "fragment"),
    ],
)
def test_bad_urls_name_the_option(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as caught:
        RedisURL.parse(text)
    assert str(caught.value).startswith("--redis ")


def test_errors_and_redacted_form_never_show_the_password() -> None:
    with pytest.raises(ValueError) as caught:
        RedisURL.parse("redis://:hunter2@h:notaport/0")
    assert "hunter2" not in str(caught.value)
    url = RedisURL.parse("redis+sentinel://u:hunter2@s1:1,s2:2/m/3?sentinel_password=x")
    assert "hunter2" not in url.redacted() + repr(url)
    assert url.redacted() == "redis+sentinel://***@s1:1,s2:2/m/3"
    assert RedisURL.parse("rediss://[::1]:5").redacted() == "rediss://[::1]:5/0"


def test_bad_ca_file_fails_at_open(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"--redis: \?ca="):
        open_pool(f"rediss://h:1/0?ca={tmp_path / 'missing.pem'}", MemoryReactorClock())
    empty = tmp_path / "empty.pem"
    empty.write_text("not a certificate\n")
    with pytest.raises(ValueError, match=r"--redis: \?ca="):
        open_pool(f"rediss://h:1/0?ca={empty}", MemoryReactorClock())


def test_bad_pool_arguments() -> None:
    with pytest.raises(ValueError):
        open_pool("redis://h", MemoryReactorClock(), pool_size=0)
    with pytest.raises(ValueError):
        open_pool("redis://h", MemoryReactorClock(), timeout=0)


# -- the bounded pool, on a memory reactor ----------------------------------------


class Server(StringTransport):
    """The client's transport; :meth:`reply` plays the server's answer."""

    def reply(self, data: bytes) -> None:
        self.protocol.dataReceived(data)
        self.clock.advance(0)


def start(reactor: MemoryReactorClock, *, connect: bool = True) -> tuple[RedisConnection, Server]:
    """A one-connection pool; with ``connect`` its connection is up on a :class:`Server`."""
    connection = open_pool("redis://127.0.0.1:7777/0", reactor, pool_size=1, timeout=0.5)
    server = Server()
    server.clock = reactor
    if connect:
        host, port, factory, _, _ = reactor.tcpClients[-1]
        assert (host, port) == ("127.0.0.1", 7777)
        server.protocol = factory.buildProtocol(None)
        server.protocol.makeConnection(server)
        reactor.advance(0)  # the pool takes the connection on the next turn
    return connection, server


def run(coro: object) -> list[object]:
    results: list[object] = []
    Deferred.fromCoroutine(coro).addBoth(results.append)  # type: ignore[arg-type]
    return results


def test_a_call_during_an_outage_fails_at_the_timeout() -> None:
    reactor = MemoryReactorClock()
    connection, _ = start(reactor, connect=False)
    results = run(connection.execute("PING"))
    reactor.advance(0.49)
    assert results == []
    reactor.advance(0.02)
    [failure] = results
    assert isinstance(failure, Failure)
    assert failure.check(RegistryUnavailable)
    assert "PING" in str(failure.value)


def test_a_call_without_reply_fails_at_its_own_timeout() -> None:
    reactor = MemoryReactorClock()
    connection, server = start(reactor)
    results = run(connection.execute("GET", "k", within=0.2))
    assert server.value() == b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
    reactor.advance(0.2)
    [failure] = results
    assert isinstance(failure, Failure) and failure.check(RegistryUnavailable)


def test_replies_are_raw_bytes() -> None:
    reactor = MemoryReactorClock()
    connection, server = start(reactor)
    results = run(connection.execute("HVALS", "k"))
    server.reply(b"*2\r\n$2\r\n42\r\n$3\r\n\xc3\xbc!\r\n")
    assert results == [[b"42", "ü!".encode()]]


def test_script_falls_back_to_eval_on_noscript() -> None:
    reactor = MemoryReactorClock()
    connection, server = start(reactor)
    script = LuaScript("answer", b"return 42")
    results = run(connection.run_script(script, [b"p:"]))
    sha = script.sha1.encode()
    assert (
        server.value() == b"*4\r\n$7\r\nEVALSHA\r\n$40\r\n" + sha + b"\r\n$1\r\n0\r\n$2\r\np:\r\n"
    )
    server.clear()
    server.reply(b"-NOSCRIPT No matching script. Use EVAL.\r\n")
    assert server.value().startswith(b"*4\r\n$4\r\nEVAL\r\n$9\r\nreturn 42\r\n")
    server.reply(b":42\r\n")
    assert results == [42]


@pytest.mark.parametrize(
    ("reply", "unavailable"),
    [
        (b"-LOADING Redis is loading the dataset in memory\r\n", True),
        (b"-READONLY You can't write against a read only replica.\r\n", True),
        (b"-ERR unknown command 'NOPE'\r\n", False),
    ],
)
def test_error_replies(reply: bytes, unavailable: bool) -> None:
    reactor = MemoryReactorClock()
    connection, server = start(reactor)
    results = run(connection.execute("NOPE"))
    server.reply(reply)
    [failure] = results
    assert isinstance(failure, Failure)
    if unavailable:
        assert failure.check(RegistryUnavailable)
    else:
        assert failure.check(txredisapi.ResponseError)
        assert not failure.check(RegistryUnavailable)
