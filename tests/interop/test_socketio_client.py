"""The official socket.io-client against real ``twistd -n caas-socket`` nodes.

Every test starts its own node(s) on free ports of 127.0.0.1 and drives the
client through ``driver.mjs``; what is asserted is what an app built on
socket.io-client would see: connect and connect_error (message and data),
disconnect reasons, whether the client reconnects, and the events it gets.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import pytest_twisted

from examples.conformance_server import RunningServer
from tests.support.nodes import CaasNode
from tests.support.sio_driver import SioDriver

# Short heartbeats, where a test needs the server to notice a silent client fast.
FAST_PINGS = ("--ping-interval", "300ms", "--ping-timeout", "200ms")
# Fast reconnection: a client that would reconnect does it within ~100 ms, so
# "it did not reconnect" can be asserted in a fraction of a second.
FAST_RECONNECT = {"reconnectionDelay": 50, "reconnectionDelayMax": 100}
# How long to watch for something that must not happen.
QUIET = 0.5

Mint = Callable[..., str]
StartNode = Callable[..., CaasNode]


@pytest.fixture
def node(caas_node: StartNode, secret: str) -> CaasNode:
    """A node with JWT auth, 2 devices per user, fast heartbeats."""
    return caas_node("--jwt-secret", secret, "--max-devices", "2", *FAST_PINGS)


def connect_as(
    sio: SioDriver, client_id: str, node: CaasNode, token: str, device: str, **opts: Any
) -> None:
    """Connect like our apps do (``auth.token``, ``query.deviceId``), without waiting."""
    sio.connect(client_id, node.url, auth={"token": token}, query={"deviceId": device}, **opts)


async def connect_device(
    sio: SioDriver, client_id: str, node: CaasNode, token: str, device: str, **opts: Any
) -> dict[str, Any]:
    """Connect like our apps do; fail unless the server accepts."""
    connect_as(sio, client_id, node, token, device, **opts)
    event = await sio.wait_for(client_id, ("connect", "connect_error"))
    assert event["type"] == "connect", f"{client_id} was refused: {event}"
    return event


async def refusal(sio: SioDriver, client_id: str) -> dict[str, Any]:
    event = await sio.wait_for(client_id, ("connect", "connect_error"))
    assert event["type"] == "connect_error", f"expected a refusal, got {event}"
    return event


# -- connecting -------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_connects_with_the_apps_options(sio: SioDriver, node: CaasNode, mint: Mint):
    """auth.token, query.deviceId, websocket only, the apps' reconnection settings (defaults)."""
    sio.connect(
        "app",
        node.url,
        auth={"token": mint("alice")},
        query={"deviceId": "laptop-1"},
        transports=["websocket"],
        reconnection=True,
        reconnectionAttempts=10,
        reconnectionDelay=1000,
        reconnectionDelayMax=30000,
    )
    connected = await sio.wait_for("app", ("connect", "connect_error"))
    assert connected["type"] == "connect", connected
    assert isinstance(connected["sid"], str)
    assert len(connected["sid"]) == 20
    sio.emit("app", "heartbeat")
    beat = await sio.wait_for("app", "heartbeat")
    assert beat["args"][0]["serverTime"] > 0
    await node.log_match(r"socket " + connected["sid"] + r" connected on /")


def _expired(mint: Mint) -> str:
    return mint("alice", ttl=60, now=lambda: time.time() - 3600)


def _wrong_signature(mint: Mint) -> str:
    return mint("alice", key="another-secret-of-at-least-32-bytes")


def _no_tenant(mint: Mint) -> str:
    # The tenant under another claim name: the node's --tenant-claim (tenantId) is absent.
    return mint("alice", tenant_claim="org")


@pytest.mark.parametrize(
    ("make_token", "device", "code"),
    [
        (_expired, "d1", "expired"),
        (_wrong_signature, "d1", "invalid_signature"),
        (_no_tenant, "d1", "missing_claim"),
        (lambda mint: mint("alice"), "not a device id!", "invalid_device_id"),
        (lambda mint: "not.a.jwt", "d1", "malformed_token"),
    ],
    ids=["expired", "wrong-signature", "missing-tenant", "bad-device-id", "malformed"],
)
@pytest_twisted.ensureDeferred
async def test_bad_credentials_are_refused_with_their_code(
    sio: SioDriver,
    node: CaasNode,
    mint: Mint,
    make_token: Callable[[Mint], str],
    device: str,
    code: str,
):
    connect_as(sio, "c", node, make_token(mint), device, **FAST_RECONNECT)
    refused = await refusal(sio, "c")
    assert refused["message"] == "Authentication failed"
    assert refused["data"] == {"code": code}
    # A CONNECT_ERROR is final for socket.io-client: no retry, even with a fast backoff.
    assert refused["active"] is False
    await sio.quiet("c", ("reconnect_attempt", "connect", "connect_error"), QUIET)


@pytest_twisted.ensureDeferred
async def test_missing_token_is_refused(sio: SioDriver, node: CaasNode):
    sio.connect("c", node.url, query={"deviceId": "d1"}, **FAST_RECONNECT)
    refused = await refusal(sio, "c")
    assert refused["message"] == "Authentication failed"
    assert refused["data"] == {"code": "missing_token"}


# -- device limit -----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_device_limit_refuses_the_third_device(sio: SioDriver, node: CaasNode, mint: Mint):
    token = mint("alice")
    await connect_device(sio, "d1", node, token, "phone")
    await connect_device(sio, "d2", node, token, "laptop")

    connect_as(sio, "d3", node, token, "tablet", **FAST_RECONNECT)
    refused = await refusal(sio, "d3")
    assert refused["message"] == "Device limit reached"
    assert refused["data"]["code"] == "device_limit"
    assert refused["active"] is False
    await sio.quiet("d3", ("reconnect_attempt", "connect", "connect_error"), QUIET)

    # The first two are untouched, and the limit is per user.
    assert not sio.seen("d1", "disconnect") and not sio.seen("d2", "disconnect")
    await connect_device(sio, "other", node, mint("bob"), "tablet")
    await connect_device(sio, "other-tenant", node, mint("alice", "t2"), "tablet")


@pytest_twisted.ensureDeferred
async def test_evict_oldest_kicks_the_oldest_device(
    sio: SioDriver, caas_node: StartNode, secret: str, mint: Mint
):
    node = caas_node(
        "--jwt-secret", secret, "--max-devices", "2", "--device-limit-policy", "evict-oldest"
    )
    token = mint("alice")
    await connect_device(sio, "oldest", node, token, "phone", **FAST_RECONNECT)
    await connect_device(sio, "middle", node, token, "laptop")
    await connect_device(sio, "newest", node, token, "tablet")

    kicked = await sio.wait_for("oldest", "caas:kicked")
    assert kicked["args"] == [{"reason": "evicted"}]
    gone = await sio.wait_for("oldest", "disconnect")
    assert gone["reason"] == "io server disconnect"
    assert gone["active"] is False
    await sio.quiet("oldest", ("reconnect_attempt", "connect"), QUIET)

    # The two newest are the user's devices now.
    assert not sio.seen("middle", "disconnect")
    sio.emit("newest", "sync", {"n": 1})
    assert (await sio.wait_for("middle", "sync"))["args"] == [{"n": 1}]


@pytest_twisted.ensureDeferred
async def test_same_device_replaces_its_old_connection(sio: SioDriver, node: CaasNode, mint: Mint):
    token = mint("alice")
    await connect_device(sio, "old", node, token, "phone", **FAST_RECONNECT)
    await connect_device(sio, "new", node, token, "phone")

    kicked = await sio.wait_for("old", "caas:kicked")
    assert kicked["args"] == [{"reason": "replaced"}]
    gone = await sio.wait_for("old", "disconnect")
    assert gone["reason"] == "io server disconnect"
    await sio.quiet("old", ("reconnect_attempt", "connect"), QUIET)

    sio.emit("new", "heartbeat")
    await sio.wait_for("new", "heartbeat")
    # The phone counts once: with --max-devices 2 one more device fits, a second does not.
    await connect_device(sio, "laptop", node, token, "laptop")
    connect_as(sio, "tablet", node, token, "tablet")
    refused = await refusal(sio, "tablet")
    assert refused["data"]["code"] == "device_limit"


# -- heartbeat and sync -----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_heartbeat_is_echoed_to_the_sender_only(sio: SioDriver, node: CaasNode, mint: Mint):
    token = mint("alice")
    await connect_device(sio, "a", node, token, "phone")
    await connect_device(sio, "b", node, token, "laptop")
    before = time.time() * 1000
    sio.emit("a", "heartbeat")
    beat = await sio.wait_for("a", "heartbeat")
    after = time.time() * 1000
    (payload,) = beat["args"]
    assert set(payload) == {"serverTime"}
    assert isinstance(payload["serverTime"], int)
    assert before - 1000 <= payload["serverTime"] <= after + 1000
    await sio.quiet("b", "heartbeat", 0.3)


@pytest_twisted.ensureDeferred
async def test_sync_reaches_the_users_other_devices_only(
    sio: SioDriver, caas_node: StartNode, secret: str, mint: Mint
):
    node = caas_node("--jwt-secret", secret)
    alice = mint("alice", "t1")
    await connect_device(sio, "a1", node, alice, "phone")
    await connect_device(sio, "a2", node, alice, "laptop")
    await connect_device(sio, "a3", node, alice, "tablet")
    await connect_device(sio, "bob", node, mint("bob", "t1"), "phone")
    await connect_device(sio, "alice-t2", node, mint("alice", "t2"), "phone")

    payload = {"conversation": "c-9", "read": 42, "nested": [1, "x", None, True, {"é": "ü✓"}]}
    sio.emit("a1", "sync", payload)
    for device in ("a2", "a3"):
        got = await sio.wait_for(device, "sync")
        assert got["args"] == [payload]
    for other in ("a1", "bob", "alice-t2"):
        await sio.quiet(other, "sync", 0.1)
    await sio.quiet(None, "sync", 0.2)  # and nothing more to anyone


@pytest_twisted.ensureDeferred
async def test_binary_sync_survives_byte_for_byte(
    sio: SioDriver, caas_node: StartNode, secret: str, mint: Mint
):
    node = caas_node("--jwt-secret", secret)
    token = mint("alice")
    await connect_device(sio, "a1", node, token, "phone")
    await connect_device(sio, "a2", node, token, "laptop")

    every_byte = bytes(range(256))
    nested = {"file": every_byte * 40, "parts": [b"", b"\x00", b"\xff" * 3], "name": "x.bin"}
    sio.emit("a1", "sync", nested)
    assert (await sio.wait_for("a2", "sync"))["args"] == [nested]
    sio.emit("a1", "sync", every_byte)
    assert (await sio.wait_for("a2", "sync"))["args"] == [every_byte]


# -- liveness ---------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_client_that_stops_answering_pings_is_dropped(
    sio: SioDriver, caas_node: StartNode, secret: str, mint: Mint
):
    node = caas_node("--jwt-secret", secret, "--max-devices", "1", *FAST_PINGS)
    token = mint("alice")
    silent = await connect_device(sio, "silent", node, token, "phone", reconnection=False)
    # The single device slot is taken.
    connect_as(sio, "next", node, token, "laptop", reconnection=False)
    assert (await refusal(sio, "next"))["data"]["code"] == "device_limit"

    mark = node.mark()
    sio.pause_pongs("silent")
    paused = time.monotonic()
    gone = await sio.wait_for("silent", "disconnect", timeout=3)
    elapsed = gone["received"] - paused
    # The server pings within 300 ms and waits 200 ms for the pong that never comes.
    assert 0.15 <= elapsed <= 0.3 + 0.2 + 0.4, f"dropped after {elapsed:.3f}s"
    assert gone["reason"] == "transport close"  # the server closed it, not the client
    assert sio.seen("silent", "pong-dropped")
    await node.log_match(rf"socket {silent['sid']} disconnected on / \(ping timeout\)", 2, mark)

    # The slot is free again.
    await connect_device(sio, "later", node, token, "laptop", reconnection=False)


@pytest_twisted.ensureDeferred
async def test_server_shutdown_makes_clients_reconnect(
    sio: SioDriver, caas_node: StartNode, secret: str, mint: Mint
):
    """SIGTERM: "transport close", then the client retries until a node is back on the port."""
    first = caas_node("--jwt-secret", secret)
    token = mint("alice")
    # Ten attempts must outlast the start of a node (about a second, more on a busy
    # machine): 0.2 s doubling up to 1 s gives them about 8 s.
    before = await connect_device(
        sio, "c", first, token, "phone", reconnectionDelay=200, reconnectionDelayMax=1000
    )

    first.terminate()
    gone = await sio.wait_for("c", "disconnect")
    assert gone["reason"] == "transport close"
    assert gone["active"] is True
    first.wait(5)
    await first.log_match(r"disconnected on / \(server shutting down\)", 1)
    await sio.wait_for("c", "reconnect_attempt")

    second = caas_node("--jwt-secret", secret, "--listen", f"tcp:{first.port}:interface=127.0.0.1")
    again = await sio.wait_for("c", "connect", timeout=10)
    assert again["sid"] != before["sid"]
    await sio.wait_for("c", "reconnect")
    sio.emit("c", "heartbeat")
    await sio.wait_for("c", "heartbeat")
    await second.log_match(r"socket " + again["sid"] + r" connected on /", 1)


@pytest_twisted.ensureDeferred
async def test_a_dropped_tcp_connection_reconnects(sio: SioDriver, node: CaasNode, mint: Mint):
    """No close frame at all (a pulled cable): the client reconnects, the device slot follows."""
    token = mint("alice")
    before = await connect_device(sio, "c", node, token, "phone", **FAST_RECONNECT)
    await connect_device(sio, "other", node, token, "laptop")
    mark = node.mark()
    sio.close_engine("c")
    gone = await sio.wait_for("c", "disconnect")
    assert gone["reason"] == "transport close"
    again = await sio.wait_for("c", "connect")
    assert again["sid"] != before["sid"]
    await node.log_match(r"socket " + before["sid"] + r" disconnected on / \(transport", 2, mark)
    # Still two devices for the user, both reachable.
    sio.emit("other", "sync", "hello")
    assert (await sio.wait_for("c", "sync"))["args"] == ["hello"]


@pytest_twisted.ensureDeferred
async def test_connect_error_does_not_reconnect_but_transport_close_does(
    sio: SioDriver, node: CaasNode, mint: Mint
):
    """The two sides of socket.io-client's rule, on the same node, with the same fast backoff."""
    connect_as(sio, "refused", node, "bad", "d1", **FAST_RECONNECT)
    await refusal(sio, "refused")
    await connect_device(sio, "dropped", node, mint("alice"), "d2", **FAST_RECONNECT)
    sio.close_engine("dropped")
    await sio.wait_for("dropped", "reconnect_attempt")
    await sio.wait_for("dropped", "connect")
    assert not sio.seen("refused", "reconnect_attempt")
    assert len(sio.seen("refused", "connect_error")) == 1


@pytest_twisted.ensureDeferred
async def test_a_hung_node_is_noticed_by_the_client(
    sio: SioDriver, caas_node: StartNode, secret: str, mint: Mint
):
    """SIGSTOP: no more pings, the client gives up after pingInterval + pingTimeout by itself,
    and connects again once the node is back (SIGCONT)."""
    node = caas_node("--jwt-secret", secret, *FAST_PINGS)
    before = await connect_device(sio, "c", node, mint("alice"), "phone", **FAST_RECONNECT)
    node.pause()
    paused = time.monotonic()
    try:
        gone = await sio.wait_for("c", "disconnect", timeout=3)
    finally:
        node.resume()
    assert gone["reason"] == "ping timeout"
    assert gone["active"] is True
    assert gone["received"] - paused <= 0.3 + 0.2 + 0.5
    again = await sio.wait_for("c", "connect", timeout=5)
    assert again["sid"] != before["sid"]
    sio.emit("c", "heartbeat")
    await sio.wait_for("c", "heartbeat")


@pytest_twisted.ensureDeferred
async def test_an_oversized_message_closes_only_that_connection(
    sio: SioDriver, caas_node: StartNode, secret: str, mint: Mint
):
    node = caas_node("--jwt-secret", secret, "--max-payload", "1000")
    token = mint("alice")
    before = await connect_device(sio, "big", node, token, "phone", **FAST_RECONNECT)
    await connect_device(sio, "small", node, token, "laptop")
    sio.emit("big", "sync", "x" * 2000)
    gone = await sio.wait_for("big", "disconnect")
    assert gone["reason"] == "transport close"
    again = await sio.wait_for("big", "connect")  # a transport close: the client comes back
    assert again["sid"] != before["sid"]
    assert not sio.seen("small", "sync")
    assert not sio.seen("small", "disconnect")
    sio.emit("small", "sync", "x" * 500)
    assert (await sio.wait_for("big", "sync"))["args"] == ["x" * 500]


@pytest_twisted.ensureDeferred
async def test_unknown_namespace_is_refused(sio: SioDriver, node: CaasNode, mint: Mint):
    sio.connect(
        "c",
        node.url + "/admin",
        auth={"token": mint("alice")},
        query={"deviceId": "phone"},
        **FAST_RECONNECT,
    )
    refused = await refusal(sio, "c")
    assert refused["message"] == "Invalid namespace"
    assert refused["active"] is False
    await sio.quiet("c", ("reconnect_attempt", "connect"), 0.3)


@pytest_twisted.ensureDeferred
async def test_node_log_keeps_request_headers_out(sio: SioDriver, node: CaasNode, mint: Mint):
    """Credentials a client sends in headers (proxies, cookies) must not end up in the log.

    (Autobahn logs whole requests at debug level; twistd must not show its debug logging.)
    """
    mark = node.mark()
    connected = await connect_device(
        sio,
        "c",
        node,
        mint("alice"),
        "phone",
        extraHeaders={"Authorization": "Bearer header-credential-7f3a", "Cookie": "sid=c00k1e"},
    )
    await node.log_match(rf"socket {connected['sid']} connected on /", 2, mark)
    logged = "\n".join(node.lines[mark:])
    assert "header-credential-7f3a" not in logged
    assert "c00k1e" not in logged
    assert "#debug]" not in logged


# -- acknowledgements, on servers built with the public API -------------------------------------


@pytest_twisted.ensureDeferred
async def test_acks_both_ways(
    sio: SioDriver, asking_server: RunningServer, inprocess_conformance_server: RunningServer
):
    # Server to client: the connect handler's socket.call("ask", 1) gets our ack arguments.
    sio.connect("asked", asking_server.url, acks={"ask": [42, b"\x00\xff"]})
    asked = await sio.wait_for("asked", "ask")
    assert asked["args"] == [1]
    assert asked["ack"] is True
    answer = await sio.wait_for("asked", "answer")
    assert answer["args"] == [42, b"\x00\xff"]

    # Client to server: "message-with-ack" is acked with the same arguments, binary included.
    await sio.connected("caller", inprocess_conformance_server.url)
    ref = sio.emit("caller", "message-with-ack", 1, "2", {"3": [b"\x01\x02", False]}, ack=True)
    assert await sio.ack("caller", ref) == [1, "2", {"3": [b"\x01\x02", False]}]
    ref = sio.emit("caller", "message-with-ack", ack=True, timeout=2000)
    assert await sio.ack("caller", ref) == []


# -- the driver itself ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_driver_reports_bad_commands(sio: SioDriver):
    sio.command("no-such-command", "x")
    sio.command("emit", "nobody", event="e")
    first = await sio.wait_for(None, "error")
    second = await sio.wait_for(None, "error")
    assert "unknown command" in first["message"]
    assert "no client" in second["message"]
