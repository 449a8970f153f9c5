"""The Socket.IO v5 codec: exact wire strings, binary reassembly, strict rejection."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caas_socket.protocol.errors import DecodeError
from caas_socket.protocol.socketio import (
    ACK,
    BINARY_EVENT,
    CONNECT,
    CONNECT_ERROR,
    DISCONNECT,
    EVENT,
    Decoder,
    Packet,
    encode,
)

PLACEHOLDER = '{"_placeholder":true,"num":%d}'


@pytest.mark.parametrize(
    ("packet", "wire"),
    [
        (Packet(CONNECT), ["0"]),
        (
            Packet(CONNECT, "/", {"sid": "wZX3oN0bSVIhsaknAAAI"}),
            ['0{"sid":"wZX3oN0bSVIhsaknAAAI"}'],
        ),
        (Packet(CONNECT, "/admin"), ["0/admin,"]),
        (Packet(CONNECT, "/admin", {"sid": "x"}), ['0/admin,{"sid":"x"}']),
        (
            Packet(CONNECT_ERROR, "/", {"message": "Not authorized"}),
            ['4{"message":"Not authorized"}'],
        ),
        (
            Packet(CONNECT_ERROR, "/random", {"message": "Invalid namespace"}),
            ['4/random,{"message":"Invalid namespace"}'],
        ),
        (Packet(EVENT, "/", ["foo"]), ['2["foo"]']),
        (Packet(EVENT, "/admin", ["bar"]), ['2/admin,["bar"]']),
        (Packet(EVENT, "/", ["foo"], 12), ['212["foo"]']),
        (Packet(ACK, "/", [], 12), ["312[]"]),
        (Packet(EVENT, "/admin", ["foo"], 13), ['2/admin,13["foo"]']),
        (Packet(ACK, "/admin", ["bar"], 13), ['3/admin,13["bar"]']),
        (Packet(DISCONNECT), ["1"]),
        (Packet(DISCONNECT, "/admin"), ["1/admin,"]),
        (
            Packet(EVENT, "/", ["message-back", 1, "2", {"3": [True]}]),
            ['2["message-back",1,"2",{"3":[true]}]'],
        ),
        (Packet(EVENT, "/", ["é", {"k": "日本"}]), ['2["é",{"k":"日本"}]']),
    ],
)
def test_encodes_exactly_like_socket_io_parser(packet: Packet, wire: list[str]) -> None:
    assert encode(packet) == wire


_CYCLE: list[object] = []
_CYCLE.append(_CYCLE)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ([float("nan")], ValueError),
        ([float("inf")], ValueError),
        ([object()], TypeError),
        ([_CYCLE], ValueError),
    ],
    ids=["nan", "infinity", "object", "cycle"],
)
def test_data_json_cannot_hold_is_the_emitter_error_not_a_crash(
    data: list[object], error: type[Exception]
) -> None:
    """The shared encoder keeps no cycle markers: a cycle still ends in a clear ValueError."""
    with pytest.raises(error):
        encode(Packet(EVENT, "/", ["e", *data]))
    assert encode(Packet(EVENT, "/", ["e", 1])) == ['2["e",1]']  # the encoder still works


def test_binary_event_and_ack_use_placeholders_in_order() -> None:
    assert encode(Packet(EVENT, "/", ["baz", b"\x01\x02\x03\x04"])) == [
        '51-["baz",' + PLACEHOLDER % 0 + "]",
        b"\x01\x02\x03\x04",
    ]
    assert encode(Packet(EVENT, "/admin", ["baz", b"\x01\x02", {"x": bytearray(b"\x03\x04")}])) == [
        '52-/admin,["baz",' + PLACEHOLDER % 0 + ',{"x":' + PLACEHOLDER % 1 + "}]",
        b"\x01\x02",
        b"\x03\x04",
    ]
    assert encode(Packet(ACK, "/", ["bar", memoryview(b"\x01")], 15)) == [
        '61-15["bar",' + PLACEHOLDER % 0 + "]",
        b"\x01",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", Packet(CONNECT)),
        ('0{"token":"123"}', Packet(CONNECT, "/", {"token": "123"})),
        ("0/custom,", Packet(CONNECT, "/custom")),
        ("0/custom", Packet(CONNECT, "/custom")),
        ('0/custom,{"token":"abc"}', Packet(CONNECT, "/custom", {"token": "abc"})),
        ("1", Packet(DISCONNECT)),
        ("1/custom", Packet(DISCONNECT, "/custom")),
        ('2["message",1,"2",{"3":[true]}]', Packet(EVENT, "/", ["message", 1, "2", {"3": [True]}])),
        ('2456["message-with-ack",1]', Packet(EVENT, "/", ["message-with-ack", 1], 456)),
        ('2/admin,13["foo"]', Packet(EVENT, "/admin", ["foo"], 13)),
        ("2[7]", Packet(EVENT, "/", [7])),
        ("3456[]", Packet(ACK, "/", [], 456)),
        ('3/admin,13["bar"]', Packet(ACK, "/admin", ["bar"], 13)),
        ('4{"message":"x"}', Packet(CONNECT_ERROR, "/", {"message": "x"})),
        ('50-["empty"]', Packet(BINARY_EVENT, "/", ["empty"])),
    ],
)
def test_decodes_text_packets(text: str, expected: Packet) -> None:
    assert Decoder().decode_text(text) == expected


def test_reassembles_binary_packets_from_following_messages() -> None:
    decoder = Decoder()
    text = '52-789["message-with-ack",' + PLACEHOLDER % 0 + "," + PLACEHOLDER % 1 + "]"
    assert decoder.decode_text(text) is None
    assert decoder.awaiting_binary
    assert decoder.decode_binary(b"\x01\x02\x03") is None
    packet = decoder.decode_binary(b"\x04\x05\x06")
    assert packet == Packet(
        BINARY_EVENT, "/", ["message-with-ack", b"\x01\x02\x03", b"\x04\x05\x06"], 789
    )
    assert not decoder.awaiting_binary
    # and the decoder is ready for the next packet
    assert decoder.decode_text('2["next"]') == Packet(EVENT, "/", ["next"])


@pytest.mark.parametrize(
    ("frames", "why"),
    [
        (["abc"], "unknown Socket.IO packet type"),
        (["7"], "unknown Socket.IO packet type"),
        ([""], "unknown Socket.IO packet type"),
        (["2{}"], "non-empty array"),
        (["2[]"], "non-empty array"),
        (["2"], "non-empty array"),
        (['2abc["message-with-ack",1]'], "invalid JSON"),
        (['2["connect"]'], "reserved event name"),
        (["2[null]"], "event name"),
        (["2[true]"], "event name"),
        (["3[]"], "needs an id"),
        (["312{}"], "needs an array"),
        (["0[1]"], "must be an object"),
        (["1{}"], "carries no data"),
        (["1null"], "carries no data"),
        (["0null"], "must be an object"),
        (["4null"], "CONNECT_ERROR"),
        (["4[1]"], "CONNECT_ERROR"),
        (["2[NaN]"], "invalid JSON"),
        (["2[Infinity]"], "invalid JSON"),
        (["2[1e999]"], "out of range"),
        (['2["x"', "invalid JSON"][:1], "invalid JSON"),
        (["2" + "[" * 100_000 + "]" * 100_000], "invalid JSON"),
        (['2123456789012345678["x"]'], "ack id"),
        (['5-["x"]'], "illegal attachments"),
        (['5a-["x"]'], "illegal attachments"),
        (['52["x"]'], "illegal attachments"),
        (['5123456789-["x"]'], "illegal attachments"),
        (['5100-["x"]'], "too many attachments"),
        (['51-["x",{"_placeholder":true,"num":1}]', b"\x00"], "bad placeholder"),
        (['51-["x",{"_placeholder":true,"num":"0"}]', b"\x00"], "bad placeholder"),
        (['51-["x",{"_placeholder":true,"num":0}]', '2["y"]'], "text message while binary"),
        ([b"\x00"], "binary message without"),
    ],
)
def test_rejects_malformed_packets(frames: list[str | bytes], why: str) -> None:
    decoder = Decoder()
    with pytest.raises(DecodeError, match=why):
        for frame in frames:
            if isinstance(frame, str):
                decoder.decode_text(frame)
            else:
                decoder.decode_binary(frame)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
values_with_binary = st.recursive(
    json_values | st.binary(max_size=16),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(max_size=8).filter(lambda k: k != "_placeholder"), children, max_size=4
        )
    ),
    max_leaves=12,
)
namespaces = st.sampled_from(["/", "/admin", "/a-b_c", "/é"])
event_names = st.text(min_size=1, max_size=12).filter(
    lambda s: (
        s
        not in {
            "connect",
            "connect_error",
            "disconnect",
            "disconnecting",
            "newListener",
            "removeListener",
        }
    )
)


def _decode_all(frames: list[str | bytes]) -> Packet | None:
    decoder = Decoder()
    packet = None
    for frame in frames:
        packet = (
            decoder.decode_text(frame) if isinstance(frame, str) else decoder.decode_binary(frame)
        )
    return packet


@given(
    nsp=namespaces,
    name=event_names,
    args=st.lists(values_with_binary, max_size=4),
    ack_id=st.none() | st.integers(min_value=0, max_value=2**53 - 1),
)
@settings(max_examples=300, deadline=None)
def test_events_round_trip(nsp: str, name: str, args: list[object], ack_id: int | None) -> None:
    packet = Packet(EVENT, nsp, [name, *args], ack_id)
    decoded = _decode_all(encode(packet))
    assert decoded is not None
    assert decoded.nsp == nsp and decoded.id == ack_id
    assert decoded.data == _normalize([name, *args])


@given(nsp=namespaces, args=st.lists(values_with_binary, max_size=4), ack_id=st.integers(0, 10**9))
@settings(max_examples=200, deadline=None)
def test_acks_round_trip(nsp: str, args: list[object], ack_id: int) -> None:
    decoded = _decode_all(encode(Packet(ACK, nsp, args, ack_id)))
    assert decoded is not None and decoded.id == ack_id and decoded.data == _normalize(args)


def _normalize(value: object) -> object:
    """What a round trip gives back: tuples as lists, every buffer as bytes."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, list | tuple):
        return [_normalize(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalize(v) for k, v in value.items()}
    return value


@given(st.text(max_size=200))
@settings(max_examples=2000, deadline=None)
def test_garbage_text_never_raises_anything_but_decode_error(text: str) -> None:
    with contextlib.suppress(DecodeError):
        Decoder().decode_text(text)


@given(st.lists(st.one_of(st.text(max_size=60), st.binary(max_size=20)), max_size=6))
@settings(max_examples=1000, deadline=None)
def test_garbage_sequences_never_raise_anything_but_decode_error(frames: list[str | bytes]) -> None:
    decoder = Decoder()
    for frame in frames:
        try:
            if isinstance(frame, str):
                decoder.decode_text(frame)
            else:
                decoder.decode_binary(frame)
        except DecodeError:
            decoder = Decoder()


prefixes = st.sampled_from(["0", "1", "2", "3", "4", "51-", "61-", "2/nsp,", "212", "3/x,7"])


@given(prefixes, json_values)
@settings(max_examples=1000, deadline=None)
def test_structured_garbage_never_raises_anything_but_decode_error(
    prefix: str, value: object
) -> None:
    import json

    with contextlib.suppress(DecodeError):
        Decoder().decode_text(prefix + json.dumps(value))
