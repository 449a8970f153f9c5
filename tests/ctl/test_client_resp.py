"""The RESP2 codec of the blocking client: property round trips and the malformed cases."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caas_socket.client.resp import (
    INCOMPLETE,
    MAX_DEPTH,
    ProtocolError,
    ReplyReader,
    RespError,
    encode_request,
)


def encode_reply(value: Any) -> bytes:
    """The server side of RESP2, written independently of the reader under test."""
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, RespError):
        return b"-" + value.message.encode() + b"\r\n"
    if isinstance(value, str):
        return b"+" + value.encode("utf-8", "surrogateescape") + b"\r\n"
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    return b"*%d\r\n" % len(value) + b"".join(encode_reply(v) for v in value)


def no_crlf(text: str) -> bool:
    return "\r" not in text and "\n" not in text


simple = st.text(max_size=30).filter(no_crlf)
scalars = st.one_of(
    st.none(),
    st.binary(max_size=200),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    simple,
    simple.map(RespError),
)
replies = st.recursive(scalars, lambda inner: st.lists(inner, max_size=6), max_leaves=40)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def read_all(reader: ReplyReader, chunks: list[bytes]) -> list[Any]:
    out = []
    for chunk in chunks:
        reader.feed(chunk)
        while (reply := reader.next_reply()) is not INCOMPLETE:
            out.append(reply)
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(replies, min_size=1, max_size=5), st.lists(st.integers(0, 10_000), max_size=12))
def test_replies_round_trip_however_the_bytes_are_split(values: list[Any], cuts: list[int]):
    wire = b"".join(encode_reply(v) for v in values)
    reader = ReplyReader()
    assert read_all(reader, split(wire, cuts)) == values
    assert reader.pending == 0


arguments = st.one_of(
    st.binary(max_size=100),
    st.text(max_size=40),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(arguments, min_size=1, max_size=8), st.lists(st.integers(0, 5000), max_size=6))
def test_requests_are_arrays_of_bulk_strings(args: list[Any], cuts: list[int]):
    # A request is what Redis reads: an array of bulk strings, whatever the argument type.
    def as_bytes(arg: Any) -> bytes:
        return arg if isinstance(arg, bytes) else str(arg).encode("utf-8", "surrogatepass")

    wire = encode_request(*args)
    assert read_all(ReplyReader(), split(wire, cuts)) == [[as_bytes(a) for a in args]]


def test_request_bytes_are_exactly_resp() -> None:
    assert encode_request("PUBLISH", b"caas:api", "é", 5, 1.5) == (
        b"*5\r\n$7\r\nPUBLISH\r\n$8\r\ncaas:api\r\n$2\r\n\xc3\xa9\r\n$1\r\n5\r\n$3\r\n1.5\r\n"
    )


@pytest.mark.parametrize("bad", [True, None, ["x"], object()])
def test_requests_refuse_what_redis_would_not_understand(bad: Any) -> None:
    with pytest.raises(TypeError):
        encode_request("SET", "k", bad)
    with pytest.raises(ValueError, match="at least its name"):
        encode_request()


def test_errors_are_values_with_their_code() -> None:
    reader = ReplyReader()
    reader.feed(b"-WRONGPASS invalid username-password pair\r\n*2\r\n-ERR x\r\n:1\r\n")
    error = reader.next_reply()
    assert isinstance(error, RespError) and error.code == "WRONGPASS"
    assert reader.next_reply() == [RespError("ERR x"), 1]


def test_null_array_and_empty_values() -> None:
    reader = ReplyReader()
    reader.feed(b"*-1\r\n$0\r\n\r\n*0\r\n+\r\n")
    assert [reader.next_reply() for _ in range(4)] == [None, b"", [], ""]
    assert reader.next_reply() is INCOMPLETE


@pytest.mark.parametrize(
    "wire",
    [
        b"?what\r\n",
        b":12x\r\n",
        b":\r\n",
        b"$-2\r\n",
        b"$3\r\nabcde\r\n",
        b"*-5\r\n",
        b"$999999999999\r\n",
        b"*1\r\n" * (MAX_DEPTH + 1) + b":1\r\n",
        b"+" + b"x" * 70_000,
    ],
)
def test_malformed_input_is_a_protocol_error(wire: bytes) -> None:
    reader = ReplyReader()
    reader.feed(wire)
    with pytest.raises(ProtocolError):
        reader.next_reply()


def test_incomplete_input_waits_and_consumes_nothing() -> None:
    reader = ReplyReader()
    for partial in (b"*2\r\n$3\r\nab", b"c\r", b"\n:4", b"2\r"):
        reader.feed(partial)
        assert reader.next_reply() is INCOMPLETE
    reader.feed(b"\n")
    assert reader.next_reply() == [b"abc", 42]
