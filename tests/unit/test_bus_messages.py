"""The cluster bus message format, version 1."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from caas_socket.cluster import messages
from caas_socket.cluster.delivery import BusDispatcher
from caas_socket.server import Socket
from tests.support.fakes import new_server, open_client


@pytest.mark.parametrize(
    ("message", "wire"),
    [
        (
            messages.Emit("/", ("user:acme:alice",), ("sid1",), b'42["sync",1]'),
            b'caas/1 {"t":"emit","nsp":"/","rooms":["user:acme:alice"],"except":["sid1"]}\n'
            b'42["sync",1]',
        ),
        (
            messages.Emit("/", None, (), b"451-[...]", (b"\x00\x01",)),
            b'caas/1 {"t":"emit","nsp":"/","rooms":null,"except":[],"bin":["AAE="]}\n451-[...]',
        ),
        (
            messages.Close("sid9", "replaced"),
            b'caas/1 {"t":"close","sid":"sid9","reason":"replaced","reconnect":false}\n',
        ),
        (
            messages.Probe("node-1", "ab12"),
            b'caas/1 {"t":"probe","from":"node-1","nonce":"ab12"}\n',
        ),
    ],
)
def test_documented_wire_form_round_trips(message: messages.Message, wire: bytes) -> None:
    assert messages.encode(message) == wire
    assert messages.decode(wire) == message


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"caas/2 {}\n",
        b"caas/1 {}",
        b"caas/1 not json\n",
        b"caas/1 []\n",
        b'caas/1 {"t":"what"}\n',
        b'caas/1 {"t":"emit","nsp":"/","rooms":[1],"except":[]}\n',
        b'caas/1 {"t":"emit","nsp":"/","rooms":null,"except":[],"bin":["!"]}\n',
        b'caas/1 {"t":"close"}\n',
    ],
)
def test_malformed_messages_are_refused(bad: bytes) -> None:
    with pytest.raises(messages.BusDecodeError):
        messages.decode(bad)


@given(st.binary(max_size=80))
def test_garbage_only_raises_bus_decode_error(data: bytes) -> None:
    with contextlib.suppress(messages.BusDecodeError):
        messages.decode(b"caas/1 " + data)


def test_dispatcher_delivers_emits_to_local_rooms_and_kicks_registered_sockets() -> None:
    from caas_socket.app.devices import LocalKicker

    server, _ = new_server()
    local = LocalKicker()
    sockets: list[Socket] = []
    server.on_connect(sockets.append)
    a, _ = open_client(server)
    b, _ = open_client(server)
    for t in (a, b):
        t.receive("40")
        t.take()
    sockets[0].join("room")
    sockets[1].join("room")
    local.registered[sockets[1].id] = sockets[1]
    dispatch = BusDispatcher(server, local)
    dispatch(messages.Emit("/", ("room",), (sockets[0].id,), b'42["sync",1]'))
    assert a.take() == [] and b.take() == ['42["sync",1]']
    dispatch(messages.Emit("/nowhere", None, (), b'42["x"]'))
    dispatch(messages.Close("unknown-socket", "replaced"))
    dispatch(messages.Close(sockets[1].id, "evicted"))
    assert b.take() == ['42["caas:kicked",{"reason":"evicted"}]', "41"]


def _batch(*payloads: bytes) -> bytes:
    """The envelope the publishing script builds."""
    return messages.BATCH + b"".join(str(len(p)).encode() + b"\n" + p for p in payloads)


def test_a_batch_envelope_yields_its_messages_in_order() -> None:
    first = messages.Emit("/", ("user:t:u",), ("s1",), b'42["sync",1]')
    second = messages.Emit("/", ("user:t:v",), (), b'42["sync","\n2"]')
    found = messages.decode_many(_batch(messages.encode(first), messages.encode(second)))
    assert found == [first, second]
    assert messages.decode_many(messages.encode(first)) == [first]


@pytest.mark.parametrize(
    "bad",
    [
        messages.BATCH + b"x\nabc",
        messages.BATCH + b"999\ncaas/1 {}\n",
        messages.BATCH + b"5",
        messages.BATCH + b"7\nnot-bus",
    ],
)
def test_malformed_batches_are_refused(bad: bytes) -> None:
    with pytest.raises(messages.BusDecodeError):
        messages.decode_many(bad)
