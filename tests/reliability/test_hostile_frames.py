"""Hostile frames against a live node: bad connections close alone, with a logged reason.

A well-behaved official client sends ``heartbeat`` every 100 ms to the same
node throughout and must get every answer, promptly.  Meanwhile hundreds of
raw connections send random and mutated frames (text and binary, bad
opcodes, reserved bits, unmasked, stray fragments, bad close codes, mutated
Engine.IO/Socket.IO packets); frames past ``--max-payload`` must close with
1009; permessage-deflate is refused unless enabled, and when enabled a small
frame inflating past ``--max-payload`` is refused with 1009 too.
"""

from __future__ import annotations

import json
import random
import time

import pytest_twisted
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.threads import deferToThread

from tests.interop.conftest import SECRET
from tests.reliability.figures import figure
from tests.reliability.fuzz import Fuzzer
from tests.reliability.harness import NodeGroup
from tests.reliability.hostile import asks_to_close, deflate, hostile_connection, random_frames
from tests.reliability.measure import RssSampler, healthz
from tests.reliability.rawws import BINARY, TEXT, RawWebSocket, frame
from tests.reliability.scenario import sleep
from tests.support.sio_driver import SioDriver

CONNECTIONS = 600
THREADS = 6
MAX_PAYLOAD = 65536


def _explains(line: str) -> bool:
    """Whether a log line (JSON) about a connection tells why it ended.

    Any line but the socket's own "authenticating"/"connected" transitions:
    malformed packets, unexpected packet types and WebSocket errors each have
    their own message (the JSON observer drops a field named ``why``, so the
    WebSocket layer's reason is in the message only).
    """
    try:
        event = json.loads(line)
    except ValueError:
        return False
    if event.get("event") == "socket_state":
        return event.get("state") == "disconnected" and event.get("reason") not in (None, "-")
    return True


class Heartbeats:
    """The official client's ``heartbeat`` every ``interval``; round trips counted at the end."""

    def __init__(self, sio: SioDriver, client: str, interval: float = 0.1) -> None:
        self.sio, self.client, self.interval = sio, client, interval
        self.sent: list[float] = []
        self.running = True

    async def run(self) -> None:
        while self.running:
            self.sent.append(time.monotonic())
            self.sio.emit(self.client, "heartbeat")
            await sleep(self.interval)

    def round_trips_ms(self) -> list[float]:
        answers = [e["received"] for e in self.sio.seen(self.client, "heartbeat")]
        return [(a - s) * 1000 for s, a in zip(self.sent, answers, strict=False)]


def _bad_lines(lines: list[str]) -> list[str]:
    return [
        line
        for line in lines
        if "Unhandled" in line
        or "Traceback" in line
        or '"level": "critical"' in line
        or '"level": "error"' in line
    ]


@pytest_twisted.ensureDeferred
async def test_random_frames_close_only_their_connection(
    nodes: NodeGroup, sio: SioDriver, mint
) -> None:
    node = nodes.start("--jwt-secret", SECRET, "--max-payload", str(MAX_PAYLOAD))
    await sio.connected("good", node.url, auth={"token": mint("good")}, query={"deviceId": "d"})
    beats = Heartbeats(sio, "good")
    beating = Deferred.fromCoroutine(beats.run())
    rng = random.Random(20261126)
    fuzzer = Fuzzer(seed=20261126)
    plans = []
    for i in range(CONNECTIONS):
        frames_iter = random_frames(rng, fuzzer)
        frames = [next(frames_iter) for _ in range(rng.randint(1, 4))]
        auth = {"token": mint(f"h{i}")} if i % 2 else None
        plans.append((frames, auth))
    since = node.mark()

    def attack(share: list) -> list:
        return [hostile_connection(node.host, node.port, f, auth=a, wait=1.5) for f, a in share]

    started = time.monotonic()
    with RssSampler(node.pid) as rss:
        results = await gatherResults(
            [deferToThread(attack, plans[t::THREADS]) for t in range(THREADS)]
        )
    seconds = time.monotonic() - started
    await sleep(0.5)
    beats.running = False
    await beating
    outcomes = [o for share in results for o in share]
    log = node.lines[since:]
    closed = [o for o in outcomes if o.closed]
    unexplained = []
    for o in closed:
        if asks_to_close(o.frames):
            continue  # an Engine.IO CLOSE: the client asked, nothing to explain
        ids = [i for i in (o.engine_sid, o.socket_sid) if i]
        mentioned = [line for line in log if any(i in line for i in ids)]
        if not any(_explains(line) for line in mentioned):
            unexplained.append((o, mentioned[-3:]))
    trips = beats.round_trips_ms()
    figure(
        "hostile-frames",
        "connections",
        len(outcomes),
        "",
        closed_by_server=len(closed),
        seconds=round(seconds, 1),
    )
    figure("hostile-frames", "unexplained_closes", len(unexplained), "connections")
    figure(
        "hostile-frames",
        "good_client_heartbeats",
        len(trips),
        "",
        sent=len(beats.sent),
        p99_ms=round(sorted(trips)[int(len(trips) * 0.99) - 1], 1) if trips else None,
    )
    figure("hostile-frames", "peak_rss_growth", round(rss.growth_kib / 1024, 2), "MiB")
    assert node.running and healthz(node.health_url) == 200
    assert not unexplained, unexplained[:3]
    assert not _bad_lines(log), _bad_lines(log)[:5]
    assert len(trips) == len(beats.sent) or len(trips) >= len(beats.sent) - 1
    assert max(trips) < 1000, max(trips)
    assert not sio.seen("good", "disconnect")


@pytest_twisted.ensureDeferred
async def test_deeply_nested_binary_event_is_a_parse_error(nodes: NodeGroup, mint) -> None:
    """A 1.2 KB packet nesting 600 arrays: a parse error like any other, not a crash.

    The decoder's own rebuild of binary packets recurses once per level.
    """
    node = nodes.start("--jwt-secret", SECRET)
    since = node.mark()
    nested = "[" * 600 + "]" * 600
    with RawWebSocket(node.host, node.port).open() as ws:
        ws.engine_open()
        kind, answer = ws.connect_namespace({"token": mint("deep")})
        assert kind == "connect"
        ws.send_text('450-["e",' + nested + "]")
        ws.wait_closed(3.0)
    await sleep(0.5)
    lines = node.lines[since:]
    bad = _bad_lines(lines)
    assert not bad, f"{len(bad)} error lines; the first: {bad[0][:400]}"
    ended = node.events(since, event="socket_state", socket_id=answer["sid"], state="disconnected")
    assert [e["reason"] for e in ended] == ["parse error"]


@pytest_twisted.ensureDeferred
async def test_frames_over_max_payload_are_closed_with_1009(nodes: NodeGroup, mint) -> None:
    node = nodes.start("--jwt-secret", SECRET, "--max-payload", str(MAX_PAYLOAD))
    codes = {}
    cases = {
        "text": frame(b"4" + b"x" * MAX_PAYLOAD, TEXT),
        "binary": frame(b"\x00" * (MAX_PAYLOAD + 1), BINARY),
        "announced-2^62": frame(b"", TEXT, length=2**62),
        "fragments": frame(b"4" + b"x" * 40000, TEXT, fin=False) + frame(b"x" * 40000, 0),
    }
    for name, data in cases.items():
        with RawWebSocket(node.host, node.port).open() as ws:
            ws.engine_open()
            ws.connect_namespace({"token": mint("big")})
            ws.send_raw(data)
            codes[name] = ws.wait_closed(3.0)
    figure("max-payload", "close_codes", codes, "", max_payload=MAX_PAYLOAD)
    assert set(codes.values()) == {1009}, codes
    assert healthz(node.health_url) == 200


DEFLATE_OFFER = {"Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits"}


@pytest_twisted.ensureDeferred
async def test_compression_is_off_by_default(nodes: NodeGroup, mint) -> None:
    node = nodes.start("--jwt-secret", SECRET)
    with RawWebSocket(node.host, node.port, headers=DEFLATE_OFFER).open() as ws:
        assert "sec-websocket-extensions" not in ws.answer.headers, ws.answer.headers
        ws.engine_open()
        ws.connect_namespace({"token": mint("z")})
        ws.send_raw(frame(deflate(b'42["heartbeat"]', 15), TEXT, rsv=4))  # RSV1: compressed
        code = ws.wait_closed(3.0)
    figure("compression", "default_offer_answer", "no extension", "", rsv1_close_code=code)
    assert code == 1002


@pytest_twisted.ensureDeferred
async def test_compression_bomb_is_refused(nodes: NodeGroup, mint) -> None:
    node = nodes.start(
        "--jwt-secret", SECRET, "--websocket-compression", "--max-payload", str(MAX_PAYLOAD)
    )
    bomb_size = 64 * 2**20
    with RawWebSocket(node.host, node.port, headers=DEFLATE_OFFER).open() as ws:
        offer = ws.answer.headers.get("sec-websocket-extensions", "")
        assert offer.startswith("permessage-deflate"), ws.answer.headers
        bits = 10 if "client_max_window_bits=10" in offer else 15
        ws.engine_open()
        ws.connect_namespace({"token": mint("bomb")})
        small = deflate(b'42["heartbeat",{"a":1}]', bits)
        ws.send_raw(frame(small, TEXT, rsv=4))
        assert ws.recv_text().startswith('42["heartbeat"')
        bomb = deflate(b'42["x","' + b"A" * bomb_size + b'"]', bits)
        with RssSampler(node.pid) as rss:
            started = time.monotonic()
            ws.send_raw(frame(bomb, TEXT, rsv=4))
            code = ws.wait_closed(10.0)
            seconds = time.monotonic() - started
    figure(
        "compression",
        "bomb_close_code",
        code,
        "",
        compressed_kib=round(len(bomb) / 1024, 1),
        inflates_to_mib=bomb_size // 2**20,
        seconds=round(seconds, 3),
    )
    figure("compression", "bomb_peak_rss_growth", round(rss.growth_kib / 1024, 2), "MiB")
    assert code == 1009
    assert rss.growth_kib < 8 * 1024
    assert healthz(node.health_url) == 200
