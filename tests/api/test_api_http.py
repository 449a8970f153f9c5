"""The API site at the HTTP level: body limits, early 413s, outages, logs, clients that leave."""

from __future__ import annotations

import json
import time
from typing import Any, cast

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.python.failure import Failure

from caas_socket.api import ApiKeys, site
from caas_socket.registry.interfaces import RegistryUnavailable
from tests.api.client import FULL_KEY, KEYS_TEXT, T1_KEY, TIMEOUT, sleep
from tests.api.fakes import FakeOperations, LocalApi

USER = "/v1/tenants/t1/users/alice"


@pytest_twisted.ensureDeferred
async def test_bodies_up_to_the_limit_are_read_larger_ones_refused(api: LocalApi) -> None:
    exact = json.dumps({"event": "m", "data": "x"}).encode()
    exact += b" " * (1024 - len(exact))
    assert (await api.client.post(f"{USER}/emit", raw=exact)).status == 202
    over = exact + b" "
    for chunked in (False, True):
        reply = await api.client.post(f"{USER}/emit", raw=over, chunked=chunked)
        assert (reply.status, reply.code) == (413, "body_too_large")
    assert len(api.ops.sent) == 1


class _Raw(Protocol):
    """A raw HTTP client: sends bytes, collects everything until the server closes."""

    def __init__(self) -> None:
        self.received = b""
        self.closed: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed.callback(self.received)


async def _raw(api: LocalApi) -> _Raw:
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", api.port_number, timeout=TIMEOUT)
    return await connectProtocol(endpoint, _Raw())


async def _received(raw: _Raw, until: bytes, timeout: float = TIMEOUT) -> bytes:
    for _ in range(int(timeout / 0.02)):
        if until in raw.received:
            return raw.received
        await sleep(0.02)
    raise AssertionError(f"never received {until!r}; got {raw.received!r}")


def _head(key: str = FULL_KEY, **headers: str) -> bytes:
    lines = [f"POST {USER}/emit HTTP/1.1", "Host: x", f"Authorization: Bearer {key}"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest_twisted.ensureDeferred
async def test_an_announced_large_body_is_refused_before_it_is_sent(api: LocalApi) -> None:
    raw = await _raw(api)
    with capturedLogs() as events:
        raw.transport.write(
            _head(
                Content_Type="application/json", Content_Length="1000000000", Expect="100-continue"
            )
        )
        answer = await _received(raw, b"body_too_large")
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"100 Continue" not in answer
    raw.transport.write(b"x" * 50_000)  # dropped, not buffered
    raw.transport.loseConnection()
    await raw.closed
    logged = [e for e in events if e.get("event") == "api_request"]
    assert [(e["status"], e["route"], e["tenant"]) for e in logged] == [
        (413, "/v1/tenants/{tenant}/users/{user}/emit", "t1")
    ]
    assert api.ops.sent == []


@pytest_twisted.ensureDeferred
async def test_a_refused_body_still_arriving_is_dropped_then_the_connection_closed(
    api: LocalApi,
) -> None:
    raw = await _raw(api)
    raw.transport.write(_head(Content_Type="application/json", Content_Length="5000"))
    await _received(raw, b"body_too_large")
    started = time.monotonic()
    raw.transport.write(b" " * 5000)  # the whole announced body: the server closes at once
    answer = await raw.closed.addTimeout(TIMEOUT, reactor)
    assert time.monotonic() - started < site.LINGER / 2
    assert answer.count(b"HTTP/1.1") == 1
    assert b"\r\nconnection: close\r\n" in answer.lower()


@pytest_twisted.ensureDeferred
async def test_a_client_that_never_sends_the_refused_body_is_closed_after_a_while(
    api: LocalApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(site, "LINGER", 0.2)
    raw = await _raw(api)
    started = time.monotonic()
    raw.transport.write(_head(Content_Type="application/json", Content_Length="5000"))
    answer = await raw.closed.addTimeout(TIMEOUT, reactor)
    assert b"body_too_large" in answer and 0.15 < time.monotonic() - started < 2


@pytest_twisted.ensureDeferred
async def test_registry_outage_is_503_and_bugs_are_500(api: LocalApi) -> None:
    api.ops.failure = RegistryUnavailable("down")
    for reply in [
        await api.client.post(f"{USER}/emit", {"event": "m"}),
        await api.client.get(f"{USER}/connections"),
        await api.client.post("/v1/tenants/t1/presence", {"userIds": ["a"]}),
    ]:
        assert (reply.status, reply.code, reply.headers["retry-after"]) == (503, "unavailable", "1")
    api.ops.failure = ZeroDivisionError("a bug")
    with capturedLogs() as events:
        reply = await api.client.get(f"{USER}/rooms")
    assert (reply.status, reply.code) == (500, "internal_error")
    assert "ZeroDivisionError" not in reply.body.decode()
    assert any("log_failure" in e for e in events)


@pytest_twisted.ensureDeferred
async def test_every_request_is_logged_once_without_ids_bodies_or_keys(api: LocalApi) -> None:
    secret_data = "top-secret-payload"
    with capturedLogs() as events:
        await api.client.post(f"{USER}/emit", {"event": "m", "data": secret_data})
        await api.client_with(T1_KEY).get("/v1/tenants/t2/users/bob/rooms")
        await api.client.get("/nowhere/alice")
        await api.client.request("DELETE", f"{USER}/rooms")
    logged = [e for e in events if e.get("event") == "api_request"]
    assert [(e["method"], e["route"], e["status"], e["tenant"]) for e in logged] == [
        ("POST", "/v1/tenants/{tenant}/users/{user}/emit", 202, "t1"),
        ("GET", "/v1/tenants/{tenant}/users/{user}/rooms", 403, "t2"),
        ("GET", "-", 404, None),
        ("DELETE", "/v1/tenants/{tenant}/users/{user}/rooms", 405, "t1"),
    ]
    assert [e["principal"] for e in logged] == ["line 2", None, None, None]
    assert all(e["log_level"].name == "info" and e["duration_ms"] >= 0 for e in logged)
    text = repr(events)
    for leaked in (secret_data, FULL_KEY, T1_KEY, "alice", "bob"):
        assert leaked not in text


class _Blocking:
    """Operations whose ``send`` waits for the test."""

    def __init__(self) -> None:
        self.release: Deferred[None] = Deferred()
        self.sent: list[Any] = []

    async def send(self, command: Any) -> None:
        await self.release
        self.sent.append(command)


@pytest_twisted.ensureDeferred
async def test_a_client_that_leaves_early_breaks_nothing(api: LocalApi) -> None:
    blocking = _Blocking()
    api.ops.send = blocking.send  # type: ignore[method-assign]
    raw = await _raw(api)
    body = b'{"event":"m"}'
    with capturedLogs() as events:
        raw.transport.write(
            _head(Content_Type="application/json", Content_Length=str(len(body))) + body
        )
        await sleep(0.1)
        raw.transport.loseConnection()
        await raw.closed
        blocking.release.callback(None)
        await sleep(0.05)
    assert len(blocking.sent) == 1  # done all the same: the command was valid
    assert not any("log_failure" in e for e in events)
    assert [e["status"] for e in events if e.get("event") == "api_request"] == [202]


def test_the_default_body_limit_is_64_kib() -> None:
    built = site.build_api_site(
        cast(Any, FakeOperations()), ApiKeys.parse(KEYS_TEXT), reactor=Clock(), openapi=b"{}"
    )
    assert isinstance(built, site.ApiSite) and built.max_body == 64 * 1024
    assert built.displayTracebacks is False and built.noisy is False
