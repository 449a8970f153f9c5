"""The application-facing API over a recording transport, driven by a Clock."""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.logger import capturedLogs

from caas_socket.server import AckError, ConnectionRefused, Socket
from caas_socket.server.adapter import RoomLimitExceeded
from tests.support.fakes import new_server, open_client


def connected(server, nsp: str = "/", auth: str = ""):  # type: ignore[no-untyped-def]
    transport, _ = open_client(server)
    prefix = "" if nsp == "/" else nsp + ","
    transport.receive(f"40{prefix}{auth}")
    (ack,) = transport.take()
    assert ack.startswith("40" + prefix), ack
    return transport, json.loads(ack[2 + len(prefix) :])["sid"]


def test_connect_to_main_namespace_answers_with_only_the_sid() -> None:
    server, _ = new_server()
    seen: list[Socket] = []
    server.on_connect(seen.append)
    _transport, sid = connected(server, auth='{"token":"123"}')
    assert len(sid) == 20
    assert seen[0].id == sid and seen[0].handshake.auth == {"token": "123"}
    assert server.main.sockets[sid] is seen[0]


def test_unknown_namespace_is_refused_exactly_like_socket_io() -> None:
    server, _ = new_server()
    transport, _ = open_client(server)
    transport.receive("40/random")
    assert transport.take() == ['44/random,{"message":"Invalid namespace"}']
    assert not transport.closed


def test_custom_namespace_with_and_without_trailing_comma() -> None:
    server, _ = new_server()
    server.of("/custom")
    transport, _ = open_client(server)
    transport.receive("40/custom")
    (ack,) = transport.take()
    assert ack.startswith('40/custom,{"sid":"')
    transport.receive("40")
    (ack,) = transport.take()
    assert ack.startswith('40{"sid":"')


@pytest.mark.parametrize("asynchronous", [False, True])
def test_middleware_refusal_sends_connect_error_with_message_and_data(asynchronous: bool) -> None:
    server, _ = new_server()

    def refuse(socket: Socket) -> None:
        raise ConnectionRefused("Authentication failed", {"code": "expired"})

    async def refuse_later(socket: Socket) -> None:
        refuse(socket)

    server.use(refuse_later if asynchronous else refuse)
    transport, _ = open_client(server)
    transport.receive("40")
    assert transport.take() == ['44{"message":"Authentication failed","data":{"code":"expired"}}']
    assert server.main.sockets == {}


def test_a_crashing_middleware_is_an_internal_error_not_a_crash() -> None:
    server, _ = new_server()
    server.use(lambda socket: 1 / 0)
    transport, _ = open_client(server)
    transport.receive("40")
    assert transport.take() == [
        '44{"message":"Internal server error","data":{"code":"internal_error"}}'
    ]


def test_middlewares_run_in_order_and_can_wait() -> None:
    server, _ = new_server()
    order: list[str] = []
    gate: Deferred[None] = Deferred()

    async def first(socket: Socket) -> None:
        order.append("first")
        await gate

    server.use(first)
    server.use(lambda socket: order.append("second"))
    transport, _ = open_client(server)
    transport.receive("40")
    assert order == ["first"] and transport.take() == []
    gate.callback(None)
    assert order == ["first", "second"]
    assert transport.take()[0].startswith("40")


def test_client_leaving_during_authentication_runs_cleanups_and_never_connects() -> None:
    server, _ = new_server()
    gate: Deferred[None] = Deferred()
    released: list[str] = []
    connects: list[Socket] = []

    async def acquire(socket: Socket) -> None:
        socket.add_cleanup(lambda: released.append("early"))
        await gate
        socket.add_cleanup(lambda: released.append("late"))

    server.use(acquire)
    server.on_connect(connects.append)
    transport, _ = open_client(server)
    transport.receive("40")
    transport.close()
    assert released == ["early"]
    gate.callback(None)
    assert released == ["early", "late"]
    assert connects == [] and server.main.sockets == {}


def test_event_handler_return_value_is_the_ack() -> None:
    server, _ = new_server()
    server.on("message-with-ack", lambda socket, *args: args)
    server.on("single", lambda socket, x: {"got": x})
    server.on("nothing", lambda socket: None)
    transport, _ = connected(server)
    transport.receive('42456["message-with-ack",1,"2",{"3":[false]}]')
    transport.receive('427["single",5]')
    transport.receive('428["nothing"]')
    assert transport.take() == ['43456[1,"2",{"3":[false]}]', '437[{"got":5}]', "438[]"]


def test_async_handler_acks_when_done_and_binary_ack_is_binary() -> None:
    server, _ = new_server()
    gate: Deferred[bytes] = Deferred()

    async def slow(socket: Socket) -> Any:
        return (await gate,)

    server.on("slow", slow)
    transport, _ = connected(server)
    transport.receive('421["slow"]')
    assert transport.take() == []
    gate.callback(b"\x01\x02")
    assert transport.take() == ['461-1[{"_placeholder":true,"num":0}]', b"\x01\x02"]


def test_binary_event_reaches_handler_with_bytes() -> None:
    server, _ = new_server()
    server.on("message", lambda socket, *args: socket.emit("message-back", *args))
    transport, _ = connected(server)
    transport.receive(
        '452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]',
        b"\x01\x02\x03",
        b"\x04\x05\x06",
    )
    assert transport.take() == [
        '452-["message-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]',
        b"\x01\x02\x03",
        b"\x04\x05\x06",
    ]


def test_catch_all_gets_events_without_a_handler_and_a_failing_handler_is_contained() -> None:
    server, _ = new_server()
    seen: list[tuple[Any, ...]] = []
    server.on_any(lambda socket, event, *args: seen.append((event, *args)))
    server.on("boom", lambda socket: 1 / 0)
    transport, _ = connected(server)
    transport.receive('42["anything",1]', '42["boom"]', '42[7,"numeric"]')
    assert seen == [("anything", 1), (7, "numeric")]
    assert not transport.closed


def test_server_to_client_ack_and_its_timeout() -> None:
    server, clock = new_server()
    sockets: list[Socket] = []
    server.on_connect(sockets.append)
    transport, _ = connected(server)
    socket = sockets[0]
    answers: list[Any] = []
    socket.call("ask", 1).addCallback(answers.append)
    socket.call("ask", 2, timeout=1.0).addErrback(lambda f: answers.append(f.check(AckError)))
    assert transport.take() == ['420["ask",1]', '421["ask",2]']
    transport.receive('430["yes"]')
    clock.advance(1.1)
    assert answers == [["yes"], AckError]


def test_pending_acks_fail_on_disconnect_and_are_bounded() -> None:
    server, _ = new_server(max_pending_acks=2)
    sockets: list[Socket] = []
    server.on_connect(sockets.append)
    transport, _ = connected(server)
    failures: list[str] = []
    for _ in range(3):
        sockets[0].call("ask").addErrback(lambda f: failures.append(f.getErrorMessage()))
    assert failures == ["too many acknowledgements pending"]
    transport.close()
    assert failures[1:] == ["socket disconnected: transport close"] * 2


def test_rooms_broadcast_once_encoded_to_members_except_excluded() -> None:
    server, _ = new_server()
    server.on("join", lambda socket, room: socket.join(room))
    a, sid_a = connected(server)
    b, sid_b = connected(server)
    c, _ = connected(server)
    a.receive('42["join","r"]')
    b.receive('42["join","r"]')
    assert server.to("r").emit("hello", 1) == 2
    assert a.take() == ['42["hello",1]'] and b.take() == ['42["hello",1]'] and c.take() == []
    assert server.to("r").except_(sid_a).emit("hi") == 1
    assert a.take() == [] and b.take() == ['42["hi"]']
    # a socket id is a room of its own
    server.to(sid_b).emit("direct")
    assert b.take() == ['42["direct"]'] and a.take() == []
    b.close()
    assert server.main.adapter.room_size("r") == 1


def test_room_joins_are_bounded_per_socket() -> None:
    server, _ = new_server(max_rooms_per_socket=2)
    sockets: list[Socket] = []
    server.on_connect(sockets.append)
    connected(server)
    sockets[0].join("a", "b")
    with pytest.raises(RoomLimitExceeded):
        sockets[0].join("c")


def test_client_disconnect_leaves_namespace_but_keeps_connection() -> None:
    server, clock = new_server(connect_timeout=5)
    server.of("/custom")
    reasons: list[str] = []
    server.on_disconnect(lambda socket, reason: reasons.append(reason))
    server.on("message", lambda socket, *a: socket.emit("message-back", *a))
    transport, _ = connected(server)
    transport.receive("40/custom")
    transport.take()
    transport.receive("41/custom", '42["message","to main"]')
    assert transport.take() == ['42["message-back","to main"]']
    transport.receive("41")
    assert reasons == ["client namespace disconnect"]
    assert not transport.closed
    clock.advance(5.1)
    assert transport.closed


def test_connect_timeout_closes_a_connection_that_never_connects() -> None:
    server, clock = new_server(connect_timeout=1)
    transport, _ = open_client(server)
    clock.advance(0.9)
    assert not transport.closed
    clock.advance(0.2)
    assert transport.closed
    assert server.connections == {}


def test_malformed_packet_closes_with_parse_error() -> None:
    server, _ = new_server()
    reasons: list[str] = []
    server.on_disconnect(lambda socket, reason: reasons.append(reason))
    transport, _ = connected(server)
    transport.receive("4abc")
    assert transport.closed and reasons == ["parse error"]


def test_server_disconnect_sends_disconnect_packet() -> None:
    server, _ = new_server()
    sockets: list[Socket] = []
    reasons: list[str] = []
    server.on_connect(sockets.append)
    server.on_disconnect(lambda socket, reason: reasons.append(reason))
    transport, _ = connected(server)
    sockets[0].disconnect()
    assert transport.take() == ["41"]
    assert reasons == ["server namespace disconnect"]
    assert not sockets[0].emit("late")


def test_every_state_change_is_one_log_event_with_tags() -> None:
    server, _ = new_server()
    server.use(lambda socket: socket.tags.update(user="u1", tenant="t1", device="d1"))
    with capturedLogs() as events:
        transport, _sid = connected(server)
        transport.close()
    states = [
        (e["state"], e.get("user"), e["reason"]) for e in events if e.get("event") == "socket_state"
    ]
    assert states == [
        ("authenticating", None, "-"),
        ("connected", "u1", "-"),
        ("disconnected", "u1", "transport close"),
    ]
    (ended,) = [e for e in events if e.get("state") == "disconnected"]
    assert (ended["previous"], ended["duration"], ended["unsent_bytes"]) == ("connected", 0.0, 0)
