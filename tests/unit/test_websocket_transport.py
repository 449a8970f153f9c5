"""The Autobahn glue: engine.io's handshake verdicts, frames in and out, WebSocket errors."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import txaio
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from caas_socket.server import Settings, SocketServer
from caas_socket.transport.ratelimit import ConnectRateLimiter
from caas_socket.transport.websocket import EngineWebSocketFactory, EngineWebSocketProtocol
from tests.support.wsframes import client_frame, server_frames, upgrade_request


class WireTransport(StringTransport):
    """A StringTransport that, like a TCP transport, tolerates Autobahn's producer calls."""

    def unregisterProducer(self) -> None:
        self.producer = None


@pytest.fixture
def clock() -> Iterator[Clock]:
    """Autobahn's own timers run on txaio's loop: point it at the test clock."""
    txaio.use_twisted()
    clock = Clock()
    previous = txaio.config.loop
    txaio.config.loop = clock
    yield clock
    txaio.config.loop = previous


def connect(clock: Clock, server: SocketServer | None = None, accepting: bool = True):  # type: ignore[no-untyped-def]
    server = server or SocketServer(clock, Settings(max_payload=100))
    factory = EngineWebSocketFactory(server, clock)
    factory.accepting = accepting
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
    assert isinstance(protocol, EngineWebSocketProtocol)
    transport = WireTransport(peerAddress=IPv4Address("TCP", "10.0.0.7", 40000))
    protocol.makeConnection(transport)
    return server, protocol, transport


def http_response(transport: StringTransport) -> tuple[int, dict[str, str], bytes]:
    raw = transport.value()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return status, {k.lower(): v for k, v in headers.items()}, body


@pytest.mark.parametrize(
    ("request_bytes", "status", "code", "message"),
    [
        (
            upgrade_request("/socket.io/?EIO=3&transport=websocket"),
            400,
            5,
            "Unsupported protocol version",
        ),
        (
            upgrade_request("/socket.io/?transport=websocket"),
            400,
            5,
            "Unsupported protocol version",
        ),
        (
            upgrade_request("/socket.io/?EIO=abc&transport=websocket"),
            400,
            5,
            "Unsupported protocol version",
        ),
        (upgrade_request("/socket.io/?EIO=4"), 400, 0, "Transport unknown"),
        (upgrade_request("/socket.io/?EIO=4&transport=abc"), 400, 0, "Transport unknown"),
        (
            upgrade_request("/socket.io/?EIO=4&transport=websocket&sid=abc"),
            400,
            1,
            "Session ID unknown",
        ),
        (upgrade_request("/other/?EIO=4&transport=websocket"), 404, 3, "Not found"),
        (
            b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n",
            400,
            0,
            "Transport unknown",
        ),
        (
            b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n\r\n",
            400,
            3,
            "Bad request",
        ),
        (
            b"POST /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n",
            400,
            0,
            "Transport unknown",
        ),
        (b"GARBAGE\r\n\r\n", 400, 3, "Bad request"),
    ],
)
def test_bad_handshakes_get_engine_io_json_errors(
    clock: Clock, request_bytes: bytes, status: int, code: int, message: str
) -> None:
    server, protocol, transport = connect(clock)
    protocol.dataReceived(request_bytes)
    got_status, headers, body = http_response(transport)
    assert got_status == status
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"code": code, "message": message}
    assert server.connections == {}


def test_draining_node_refuses_new_handshakes_with_503(clock: Clock) -> None:
    _, protocol, transport = connect(clock, accepting=False)
    protocol.dataReceived(upgrade_request())
    status, _, body = http_response(transport)
    assert status == 503 and json.loads(body)["message"] == "Server is shutting down"


def test_a_handshake_header_that_never_ends_is_refused_with_431(clock: Clock) -> None:
    """Autobahn would buffer a header until it ends; we stop at 16 KiB, as Node.js does."""
    server, protocol, transport = connect(clock)
    protocol.dataReceived(b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n")
    pad = b"X-Pad: " + b"a" * 1017 + b"\r\n"
    for _ in range(15):
        protocol.dataReceived(pad)
    assert transport.value() == b""  # still under the bound: keep reading
    protocol.dataReceived(pad * 2)
    status, headers, body = http_response(transport)
    assert headers["content-type"] == "application/json"
    assert status == 431
    assert json.loads(body) == {"code": 3, "message": "Request header too large"}
    assert transport.disconnecting
    assert protocol.data == b""  # nothing of the header is kept
    assert server.connections == {}


def test_frames_pipelined_after_a_complete_header_are_not_mistaken_for_one(
    clock: Clock,
) -> None:
    """A client may send its first frames with the request; only the header is bounded."""
    _, protocol, transport = connect(clock)
    frames = client_frame(b"\x00" * 90) * 300  # ~28 KiB of binary messages
    protocol.dataReceived(upgrade_request() + frames)
    status, _, _ = http_response(transport)
    assert status == 101


def open_session(clock: Clock, server: SocketServer | None = None):  # type: ignore[no-untyped-def]
    server, protocol, transport = connect(clock, server)
    protocol.dataReceived(upgrade_request("/socket.io/?EIO=4&transport=websocket&deviceId=d1"))
    raw = transport.value()
    assert raw.startswith(b"HTTP/1.1 101")
    frames = server_frames(raw.partition(b"\r\n\r\n")[2])
    transport.clear()
    return server, protocol, transport, frames


def test_upgrade_opens_an_engine_io_session_with_the_handshake(clock: Clock) -> None:
    server, _protocol, _transport, frames = open_session(clock)
    ((opcode, payload),) = frames
    assert opcode == 1
    opened = json.loads(payload[1:])
    assert set(opened) == {"sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"}
    assert opened["maxPayload"] == 100
    (connection,) = server.connections.values()
    assert connection.handshake.query == {"EIO": "4", "transport": "websocket", "deviceId": "d1"}
    assert connection.handshake.address == "10.0.0.7"


def test_text_and_binary_frames_flow_both_ways(clock: Clock) -> None:
    server, protocol, transport, _ = open_session(clock)
    server.on("echo", lambda socket, *args: args)
    protocol.dataReceived(client_frame("40"))
    protocol.dataReceived(client_frame('451-1["echo",{"_placeholder":true,"num":0}]'))
    protocol.dataReceived(client_frame(b"\x00\xff"))
    frames = server_frames(transport.value())
    assert frames[0][1].startswith(b'40{"sid":')
    assert frames[1:] == [(1, b'461-1[{"_placeholder":true,"num":0}]'), (2, b"\x00\xff")]


@pytest.mark.parametrize(
    ("frame", "close_code"),
    [
        (client_frame("4" + "x" * 200), 1009),
        (client_frame(b"\xff\xfe", opcode=1), 1007),
    ],
)
def test_websocket_violations_close_only_that_connection_as_transport_error(
    clock: Clock, frame: bytes, close_code: int
) -> None:
    server, protocol, transport, _ = open_session(clock)
    reasons: list[str] = []
    server.on_disconnect(lambda socket, reason: reasons.append(reason))
    protocol.dataReceived(client_frame("40"))
    transport.clear()
    protocol.dataReceived(frame)
    ((opcode, payload),) = server_frames(transport.value())
    assert opcode == 8 and int.from_bytes(payload[:2], "big") == close_code
    protocol.connectionLost(Failure(ConnectionDone()))
    assert reasons == ["transport error"]


def test_ping_timeout_closes_the_websocket(clock: Clock) -> None:
    server = SocketServer(clock, Settings(ping_interval=1, ping_timeout=0.5))
    server, _protocol, transport, _ = open_session(clock, server)
    clock.advance(1)
    assert server_frames(transport.value()) == [(1, b"2")]
    transport.clear()
    clock.advance(0.5)
    ((opcode, payload),) = server_frames(transport.value())
    assert opcode == 8 and int.from_bytes(payload[:2], "big") == 1000
    assert server.connections == {}


def test_connect_rate_limit_per_address_answers_429_with_json(clock: Clock) -> None:
    server = SocketServer(clock, Settings())
    limiter = ConnectRateLimiter(clock, rate=1.0, burst=2)

    def attempt(address: str = "10.0.0.7") -> int:
        factory = EngineWebSocketFactory(server, clock, limiter=limiter)
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
        transport = WireTransport(peerAddress=IPv4Address("TCP", address, 40000))
        protocol.makeConnection(transport)
        protocol.dataReceived(upgrade_request())
        status, headers, body = http_response(transport)
        if status == 429:
            assert json.loads(body) == {
                "code": 4,
                "message": "Too many connections from your address",
            }
            assert headers["retry-after"] == "1"
        return status

    assert [attempt(), attempt(), attempt()] == [101, 101, 429]
    assert attempt("10.0.0.8") == 101  # another address is not affected
    clock.advance(1.0)
    assert attempt() == 101
    assert limiter.refused == 1


def test_trusted_proxy_forwarded_address_is_the_client_address(clock: Clock) -> None:
    server = SocketServer(clock, Settings())
    factory = EngineWebSocketFactory(server, clock, trusted_proxies=1)
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
    protocol.makeConnection(WireTransport(peerAddress=IPv4Address("TCP", "10.1.1.1", 40000)))
    request = upgrade_request().replace(b"\r\n\r\n", b"\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n")
    protocol.dataReceived(request)
    (connection,) = server.connections.values()
    assert connection.handshake.address == "203.0.113.9"


def test_rate_limiter_forgets_old_addresses_within_its_bound() -> None:
    clock = Clock()
    limiter = ConnectRateLimiter(clock, rate=10.0, burst=1, max_addresses=100)
    for i in range(1000):
        assert limiter.allow(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter._buckets) <= 100
