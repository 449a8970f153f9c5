"""The API site over real TCP with fake operations: what each route asks for, and every refusal."""

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

from caas_socket.api import ApiKeys, load_openapi, site
from caas_socket.app.commands import Command
from caas_socket.registry.interfaces import Entry, RegistryUnavailable
from tests.api.conftest import (
    FULL_KEY,
    KEYS_TEXT,
    T1_KEY,
    TIMEOUT,
    FakeOperations,
    LocalApi,
    sleep,
)

USER = "/v1/tenants/t1/users/alice"


@pytest_twisted.ensureDeferred
async def test_emit_to_a_user_a_device_and_a_room(api: LocalApi) -> None:
    replies = [
        await api.client.post(f"{USER}/emit", {"event": "msg", "data": {"id": 1}}),
        await api.client.post(f"{USER}/devices/ph%2Fone/emit", {"event": "msg"}),
        await api.client.post("/v1/tenants/t1/rooms/chat%2042/emit", {"event": "m", "data": None}),
    ]
    assert [(r.status, r.json) for r in replies] == [(202, {"accepted": True})] * 3
    assert replies[0].headers["content-type"] == "application/json"
    assert api.ops.sent == [
        Command("emit", "t1", "alice", event="msg", data={"id": 1}),
        Command("emit", "t1", "alice", "ph/one", event="msg"),
        Command("emit", "t1", room="chat 42", event="m"),
    ]


@pytest_twisted.ensureDeferred
async def test_join_and_leave_rooms(api: LocalApi) -> None:
    joined = await api.client.post(f"{USER}/rooms", {"join": ["a", "b", "a"]})
    assert (joined.status, joined.json) == (200, {"rooms": ["a", "b"]})
    # The fake, like a cluster node, removes left rooms later: the answer leaves them out itself.
    changed = await api.client.post(f"{USER}/rooms", {"join": ["c"], "leave": ["a"]})
    assert changed.json == {"rooms": ["b", "c"]}
    device = await api.client.post(f"{USER}/rooms", {"join": ["d"], "deviceId": "phone"})
    assert device.json == {"rooms": ["a", "b", "c"]}  # the user's rooms; the fake never left "a"
    assert [(c.op, c.device_id, c.rooms) for c in api.ops.sent] == [
        ("join", None, ("a", "b")),
        ("join", None, ("c",)),
        ("leave", None, ("a",)),
        ("join", "phone", ("d",)),
    ]
    listed = await api.client.get(f"{USER}/rooms")
    assert (listed.status, listed.json) == (200, {"rooms": ["a", "b", "c"]})
    assert (await api.client.post(f"{USER}/rooms", {})).json == {"rooms": ["a", "b", "c"]}


@pytest_twisted.ensureDeferred
async def test_too_many_rooms_is_a_conflict_and_changes_nothing(api: LocalApi) -> None:
    await api.client.post(f"{USER}/rooms", {"join": ["a", "b"]})
    sent = len(api.ops.sent)
    refused = await api.client.post(f"{USER}/rooms", {"join": ["c", "d"], "leave": ["a"]})
    assert (refused.status, refused.code) == (409, "too_many_rooms")
    assert len(api.ops.sent) == sent  # not even the leave
    too_long = await api.client.post(f"{USER}/rooms", {"join": [f"r{i}" for i in range(101)]})
    assert (too_long.status, too_long.code) == (422, "invalid_field")
    assert len(api.ops.sent) == sent
    both = await api.client.post(f"{USER}/rooms", {"join": ["x", "b"], "leave": ["x"]})
    assert (both.status, both.json) == (200, {"rooms": ["a", "b"]})  # "x" is left, never joined
    assert [(c.op, c.rooms) for c in api.ops.sent[sent:]] == [("join", ("b",)), ("leave", ("x",))]


@pytest_twisted.ensureDeferred
async def test_disconnect_modes(api: LocalApi) -> None:
    for body in (
        {"reason": "logout", "mode": "stay-out"},
        {"reason": "", "mode": "reconnect", "deviceId": "phone"},
    ):
        assert (await api.client.post(f"{USER}/disconnect", body)).status == 202
    assert api.ops.sent == [
        Command("disconnect", "t1", "alice", reason="logout", reconnect=False),
        Command("disconnect", "t1", "alice", "phone", reason="", reconnect=True),
    ]


@pytest_twisted.ensureDeferred
async def test_connections_and_presence(api: LocalApi) -> None:
    entry = Entry("sid1", "alice", "t1", "phone", "n2", 1000, 2000)
    api.ops.entries[("t1", "alice")] = [entry]
    listed = await api.client.get(f"{USER}/connections")
    assert listed.json == {
        "connections": [
            {
                "socketId": "sid1",
                "deviceId": "phone",
                "serverId": "n2",
                "connectedAt": 1000,
                "lastActivity": 2000,
            }
        ]
    }
    assert (await api.client.get("/v1/tenants/t1/users/bob/connections")).json == {
        "connections": []
    }
    presence = await api.client.post("/v1/tenants/t1/presence", {"userIds": ["a", "b", "a"]})
    assert presence.json == {
        "presence": [
            {"userId": "a", "status": "offline", "devices": [], "version": 0},
            {"userId": "b", "status": "offline", "devices": [], "version": 0},
        ]
    }


@pytest_twisted.ensureDeferred
async def test_keys_are_checked_before_anything_is_done(api: LocalApi) -> None:
    body = {"event": "msg"}
    for client, path, status, code in [
        (api.client_with(None), f"{USER}/emit", 401, "unauthorized"),
        (api.client_with("wrong-key-wrong-key-wrong"), f"{USER}/emit", 401, "unauthorized"),
        (api.client_with(T1_KEY), "/v1/tenants/t2/users/alice/emit", 403, "forbidden"),
        (api.client_with(T1_KEY), "/v1/tenants/t2/users/alice/connections", 403, "forbidden"),
        (api.client_with(T1_KEY), "/v1/tenants/t2/presence", 403, "forbidden"),
    ]:
        method = "GET" if path.endswith("connections") else "POST"
        reply = await client.request(method, path, None if method == "GET" else body)
        assert (reply.status, reply.code) == (status, code), path
    # Refused before the body is even read: a broken body still gets 401.
    broken = await api.client_with(None).post(f"{USER}/emit", raw=b"{nope")
    assert (broken.status, broken.code) == (401, "unauthorized")
    assert "www-authenticate" in broken.headers
    assert api.ops.sent == []
    allowed = await api.client_with(T1_KEY).post(f"{USER}/emit", body)
    assert allowed.status == 202 and len(api.ops.sent) == 1


@pytest_twisted.ensureDeferred
async def test_description_and_health_need_no_key(api: LocalApi) -> None:
    anonymous = api.client_with(None)
    spec = await anonymous.get("/openapi.json")
    assert (spec.status, spec.body) == (200, load_openapi())
    assert spec.headers["content-type"] == "application/json"
    assert (await anonymous.get("/v1/health")).json == {"status": "ok"}


J = "application/json"
LONG = f"/v1/tenants/t1/users/{'u' * 257}"


@pytest.mark.parametrize(
    ("path", "raw", "content_type", "status", "code"),
    [
        (f"{USER}/emit", b'{"event":', J, 400, "invalid_json"),
        (f"{USER}/emit", b"", J, 400, "invalid_json"),
        (f"{USER}/emit", b'{"event":"m","data":NaN}', J, 400, "invalid_json"),
        (f"{USER}/emit", b'{"event":"m","data":"\\ud800"}', J, 400, "invalid_json"),
        (f"{USER}/emit", b'{"event":"\xff"}', J, 400, "invalid_json"),
        (f"{USER}/emit", b"[" * 100_000, J, 413, "body_too_large"),
        (f"{USER}/emit", b'{"event":"m"}', "text/plain", 415, "unsupported_media_type"),
        (f"{USER}/emit", b'{"event":"m"}', None, 415, "unsupported_media_type"),
        (f"{USER}/emit", b"[]", J, 422, "invalid_body"),
        (f"{USER}/emit", b"{}", J, 422, "missing_field"),
        (f"{USER}/emit", b'{"event":"m","dat":1}', J, 422, "unknown_field"),
        (f"{USER}/emit", b'{"event":"disconnect"}', J, 422, "invalid_field"),
        (f"{USER}/emit", b'{"event":""}', J, 422, "invalid_field"),
        (f"{USER}/emit", b'{"event":7}', J, 422, "invalid_field"),
        (f"{LONG}/emit", b'{"event":"m"}', J, 422, "invalid_field"),
        (f"{USER}/disconnect", b'{"reason":"x","mode":"later"}', J, 422, "invalid_field"),
        (f"{USER}/disconnect", b'{"reason":null,"mode":"reconnect"}', J, 422, "invalid_field"),
        (f"{USER}/disconnect", b'{"mode":"reconnect"}', J, 422, "missing_field"),
        (f"{USER}/rooms", b'{"join":"a"}', J, 422, "invalid_field"),
        (f"{USER}/rooms", b'{"join":null}', J, 422, "invalid_field"),
        (f"{USER}/rooms", b'{"leave":[""]}', J, 422, "invalid_field"),
        (f"{USER}/rooms", b'{"deviceId":5}', J, 422, "invalid_field"),
        ("/v1/tenants/t1/presence", b'{"userIds":[]}', J, 422, "invalid_field"),
        ("/v1/tenants/t1/presence", b'{"userIds":"a"}', J, 422, "invalid_field"),
        ("/v1/tenants/t1/presence", b'{"userIds":[1]}', J, 422, "invalid_field"),
        ("/v1/tenants/%FF/presence", b'{"userIds":["a"]}', J, 400, "invalid_path"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_requests_get_json_errors_and_do_nothing(
    api: LocalApi, path: str, raw: bytes, content_type: str | None, status: int, code: str
) -> None:
    reply = await api.client.post(path, raw=raw, content_type=content_type)
    assert (reply.status, reply.code) == (status, code), reply.json
    assert set(reply.json["error"]) == {"code", "message"}
    assert api.ops.sent == []


@pytest_twisted.ensureDeferred
async def test_presence_of_at_most_100_users(api: LocalApi) -> None:
    ids = [f"u{i}" for i in range(101)]
    reply = await api.client.post("/v1/tenants/t1/presence", {"userIds": ids})
    assert (reply.status, reply.code) == (422, "invalid_field")
    assert (await api.client.post("/v1/tenants/t1/presence", {"userIds": ids[:100]})).status == 200


@pytest_twisted.ensureDeferred
async def test_unknown_routes_and_methods(api: LocalApi) -> None:
    missing = await api.client.get("/v1/tenants/t1/users/alice")
    assert (missing.status, missing.code) == (404, "not_found")
    empty_id = await api.client.post("/v1/tenants//users/alice/emit", {"event": "m"})
    assert (empty_id.status, empty_id.code) == (404, "not_found")
    wrong = await api.client.request("PUT", f"{USER}/rooms", {"join": ["a"]})
    assert (wrong.status, wrong.code, wrong.headers["allow"]) == (
        405,
        "method_not_allowed",
        "GET, POST",
    )
    get_emit = await api.client.get(f"{USER}/emit")
    assert (get_emit.status, get_emit.headers["allow"]) == (405, "POST")
    assert api.ops.sent == []


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
