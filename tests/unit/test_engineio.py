"""Engine.IO v4: the codec and the session's heartbeat, driven by a Clock."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock

from caas_socket.engine.session import EngineSession
from caas_socket.protocol import engineio
from caas_socket.protocol.errors import DecodeError
from caas_socket.timers import TimerWheel
from tests.support.fakes import RecordingTransport


class Sink:
    def __init__(self) -> None:
        self.messages: list[str | bytes] = []
        self.closed: list[str] = []

    def on_message(self, text: str) -> None:
        self.messages.append(text)

    def on_binary(self, data: bytes) -> None:
        self.messages.append(data)

    def on_close(self, reason: str) -> None:
        self.closed.append(reason)


def test_open_packet_has_exactly_engine_io_keys_in_order() -> None:
    text = engineio.OpenHandshake("abc", (), 25000, 20000, 1000000).encode()
    assert text == (
        '0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}'
    )


def test_polling_payload_round_trip_with_binary() -> None:
    packets: list[str | bytes] = ["4hello", b"\x00\x01\xff", "2", "4é"]
    payload = engineio.encode_payload(packets)
    assert payload == "4hello\x1ebAAH/\x1e2\x1e4é"
    assert engineio.decode_payload(payload) == packets


@pytest.mark.parametrize("bad", ["", "7", "x", "b!!!"])
def test_polling_payload_rejects_garbage(bad: str) -> None:
    with pytest.raises(DecodeError):
        engineio.decode_payload(bad)


@given(st.text(max_size=50))
def test_text_decoder_only_raises_decode_error(text: str) -> None:
    with contextlib.suppress(DecodeError):
        engineio.decode_text(text)


def make_session(ping_interval: float = 25.0, ping_timeout: float = 20.0):  # type: ignore[no-untyped-def]
    clock = Clock()
    transport = RecordingTransport()
    session = EngineSession("sid1", transport, TimerWheel(clock, 0.05), ping_interval, ping_timeout)
    transport.session = session
    sink = Sink()
    session.open(engineio.OpenHandshake("sid1", (), 25000, 20000, 1000000), sink)
    transport.take()
    return clock, transport, session, sink


def test_server_pings_every_interval_while_pongs_come_back() -> None:
    clock, transport, _session, sink = make_session()
    for _ in range(3):
        clock.advance(24.9)
        assert transport.take() == []
        clock.advance(0.1)
        assert transport.take() == ["2"]
        clock.advance(5)
        transport.receive("3")
    assert sink.closed == [] and not transport.closed


def test_no_pong_within_ping_timeout_closes_with_ping_timeout() -> None:
    clock, transport, session, sink = make_session()
    clock.advance(25)
    assert transport.take() == ["2"]
    clock.advance(19.9)
    assert sink.closed == []
    clock.advance(0.1)
    assert sink.closed == ["ping timeout"]
    assert transport.closed and session.closed


def test_messages_reach_the_sink_and_binary_stays_binary() -> None:
    _clock, transport, session, sink = make_session()
    transport.receive('42["x"]', b"\x01\x02", "6")
    assert sink.messages == ['2["x"]', b"\x01\x02"]
    assert session.packets_in == 3


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("1", "transport close"),
        ("9", "parse error"),
        ("", "parse error"),
        ("2", "parse error"),
        ("5", "parse error"),
        ("0", "parse error"),
    ],
)
def test_control_packets_from_the_client(frame: str, reason: str) -> None:
    _clock, transport, _session, sink = make_session()
    transport.receive(frame)
    assert sink.closed == [reason]
    assert transport.closed


def test_nothing_is_delivered_or_sent_after_close() -> None:
    clock, transport, session, sink = make_session()
    session.close("forced close")
    transport.receive('42["late"]')
    session.send([b'42["late"]'])
    clock.advance(100)
    assert sink.messages == [] and sink.closed == ["forced close"]
    assert transport.take() == []


def test_transport_loss_ends_session_once() -> None:
    _clock, _transport, session, sink = make_session()
    session.transport_closed("transport close")
    session.transport_closed("transport error")
    session.close("forced close")
    assert sink.closed == ["transport close"]
    assert session.close_reason == "transport close"


def test_open_frame_is_json() -> None:
    clock = Clock()
    transport = RecordingTransport()
    session = EngineSession("s", transport, TimerWheel(clock), 0.3, 0.2)
    session.open(engineio.OpenHandshake("s", (), 300, 200, 1000000), Sink())
    (frame,) = transport.take()
    assert json.loads(frame[1:]) == {
        "sid": "s",
        "upgrades": [],
        "pingInterval": 300,
        "pingTimeout": 200,
        "maxPayload": 1000000,
    }
