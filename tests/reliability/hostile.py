"""Hostile connections for the live-server tests: random frames, floods, half-open handshakes.

Everything here is blocking socket code meant to run in threads
(``deferToThread``) while the reactor keeps a well-behaved official client
busy, so that the tests can tell whether the bad traffic disturbed it.
"""

from __future__ import annotations

import random
import socket
import struct
import time
import zlib
from collections.abc import Iterator
from typing import Any

import attrs

from tests.reliability.fuzz import TARGETS, Fuzzer
from tests.reliability.rawws import BINARY, CLOSE, PING, TEXT, Closed, RawWebSocket, frame

__all__ = ["Outcome", "asks_to_close", "deflate", "hostile_connection", "random_frames"]


@attrs.define
class Outcome:
    """What became of one hostile connection."""

    engine_sid: str | None = None
    socket_sid: str | None = None
    frames: list[bytes] = attrs.Factory(list)
    closed: bool = False
    code: int | None = None
    error: str | None = None
    seconds: float = 0.0


def random_frames(rng: random.Random, fuzzer: Fuzzer) -> Iterator[bytes]:
    """Frames a broken or malicious client might send, one kind at a time."""
    seeds = TARGETS["engineio.decode_text"].seeds
    while True:
        kind = rng.randrange(12)
        if kind <= 3:  # a mutated Engine.IO/Socket.IO packet as text
            payload = fuzzer.mutate(rng.choice(seeds), seeds)
            yield frame(payload.decode("utf-8", "replace").encode())
        elif kind == 4:  # the same as binary (an attachment out of the blue)
            yield frame(fuzzer.mutate(rng.choice(seeds), seeds), BINARY)
        elif kind == 5:  # random bytes as text: invalid UTF-8 most of the time
            yield frame(rng.randbytes(rng.randint(1, 64)), TEXT)
        elif kind == 6:  # a reserved opcode
            yield frame(b"x", rng.choice((3, 4, 5, 6, 7, 11, 12, 13, 14, 15)))
        elif kind == 7:  # reserved bits without an extension
            yield frame(b'42["heartbeat"]', TEXT, rsv=rng.randint(1, 7))
        elif kind == 8:  # unmasked, as only servers may send
            yield frame(b'42["heartbeat"]', TEXT, masked=False)
        elif kind == 9:  # a continuation with nothing to continue, or a fragment left open
            yield (
                frame(b"4", rng.choice((0, TEXT)), fin=False)
                if rng.random() < 0.5
                else frame(b"x", 0)
            )
        elif kind == 10:  # a control frame too long, or fragmented
            yield frame(b"p" * 126, PING) if rng.random() < 0.5 else frame(b"", PING, fin=False)
        else:  # a close frame with a bad code or a truncated one
            code = rng.choice((0, 999, 1004, 1005, 1006, 1016, 2999, 5000, 65535))
            yield (
                frame(struct.pack("!H", code), CLOSE)
                if rng.random() < 0.5
                else frame(b"\x03", CLOSE)
            )


def asks_to_close(frames: list[bytes]) -> bool:
    """Whether one of ``frames`` is an Engine.IO CLOSE (a text frame "1..."): a polite goodbye."""
    for data in frames:
        if data[0] == 0x81 and data[1] & 0x80:
            n, at = data[1] & 0x7F, 2
            if n == 126:
                at = 4
            elif n == 127:
                at = 10
            mask = data[at : at + 4]
            if len(data) > at + 4 and data[at + 4] ^ mask[0] == ord("1"):
                return True
    return False


def hostile_connection(
    host: str,
    port: int,
    frames: list[bytes],
    *,
    auth: dict[str, Any] | None,
    wait: float,
) -> Outcome:
    """Open, optionally CONNECT, send ``frames``, then wait up to ``wait`` s to be closed."""
    outcome = Outcome(frames=frames)
    started = time.monotonic()
    ws = RawWebSocket(host, port, timeout=5.0)
    try:
        ws.open()
        outcome.engine_sid = ws.engine_open()["sid"]
        if auth is not None:
            kind, answer = ws.connect_namespace(auth)
            if kind == "connect":
                outcome.socket_sid = answer["sid"]
        for data in frames:
            ws.send_raw(data)
        outcome.code = ws.wait_closed(wait)
        outcome.closed = True
    except TimeoutError:
        outcome.closed = False
    except (Closed, OSError) as e:  # reset, or closed while we were still sending
        outcome.closed, outcome.error = True, str(e)
    finally:
        ws.close()
        outcome.seconds = time.monotonic() - started
    return outcome


def deflate(data: bytes, window_bits: int) -> bytes:
    """permessage-deflate of one message (RFC 7692: raw deflate, the empty tail removed)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -window_bits)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def half_open(host: str, port: int, partial: bytes) -> socket.socket:
    """A TCP connection that sent ``partial`` (maybe nothing) of a handshake and stops."""
    sock = socket.create_connection((host, port), timeout=5.0)
    if partial:
        sock.sendall(partial)
    return sock


def closed_within(sock: socket.socket, timeout: float) -> float | None:
    """Seconds until the server closed ``sock`` (reading and dropping), ``None`` if it did not."""
    started = time.monotonic()
    while True:
        left = timeout - (time.monotonic() - started)
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return time.monotonic() - started
        except TimeoutError:
            return None
        except OSError:
            return time.monotonic() - started
