"""Hostile use of the limits: floods, half-open handshakes, thousands of everything.

Each test starts its own node (in-memory registry unless it needs Redis),
checks the limit holds with a clear refusal, that the node's memory stays
bounded, and that the node still answers (``/healthz``, a well-behaved client).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest_twisted
from twisted.internet.defer import gatherResults
from twisted.internet.threads import deferToThread

from caas_socket.client import CommandClient
from tests.api.client import FULL_KEY, KEYS_TEXT, ApiClient
from tests.interop.conftest import SECRET
from tests.reliability.figures import figure
from tests.reliability.harness import NodeGroup
from tests.reliability.hostile import closed_within, half_open
from tests.reliability.measure import RssSampler, healthz, metric, rss_kib
from tests.reliability.rawws import Closed, RawWebSocket
from tests.support.redis_server import RedisServer
from tests.support.sio_driver import SioDriver

RATE, BURST, FLOOD = 20, 40, 500


@pytest_twisted.ensureDeferred
async def test_connection_flood_from_one_address_is_rate_limited(
    nodes: NodeGroup, sio: SioDriver, mint
) -> None:
    node = nodes.start(
        "--jwt-secret",
        SECRET,
        "--connect-rate-per-ip",
        str(RATE),
        "--connect-burst-per-ip",
        str(BURST),
    )
    # Connected before the flood, from the same address: established connections are not limited.
    await sio.connected("good", node.url, auth={"token": mint("good")}, query={"deviceId": "d"})

    def flood() -> tuple[Counter[int], list[dict], float]:
        statuses: Counter[int] = Counter()
        bodies = []
        started = time.monotonic()
        for _ in range(FLOOD):
            ws = RawWebSocket(node.host, node.port, timeout=5.0)
            try:
                ws.open(expect=None)
                assert ws.answer is not None
                statuses[ws.answer.status] += 1
                if ws.answer.status == 429 and len(bodies) < 3:
                    bodies.append(
                        {"body": ws.answer.json, "retry": ws.answer.headers.get("retry-after")}
                    )
            finally:
                ws.close()
        return statuses, bodies, time.monotonic() - started

    with RssSampler(node.pid) as rss:
        statuses, bodies, seconds = await deferToThread(flood)
    # Another address (127.0.0.2 is loopback too) is not affected by 127.0.0.1's bucket.
    other = RawWebSocket(node.host, node.port, source="127.0.0.2").open()
    other.engine_open()
    assert other.connect_namespace({"token": mint("other")})[0] == "connect"
    other.close()
    sio.emit("good", "heartbeat")
    await sio.wait_for("good", "heartbeat", 2.0)
    limited = metric(node.health_url, "caas_connects_rate_limited_total")
    allowed_bound = BURST + RATE * seconds + 2
    figure(
        "connect-flood",
        "accepted",
        statuses[101],
        "handshakes",
        of=FLOOD,
        seconds=round(seconds, 2),
        bound=round(allowed_bound),
    )
    figure("connect-flood", "refused_429", statuses[429], "handshakes", metric=limited)
    figure("connect-flood", "peak_rss_growth", round(rss.growth_kib / 1024, 2), "MiB")
    assert set(statuses) <= {101, 429}, statuses
    assert BURST <= statuses[101] <= allowed_bound, statuses
    assert limited == statuses[429]
    for body in bodies:
        assert body["body"]["code"] == 4 and body["body"]["message"], body
        assert body["retry"] == "1"
    assert healthz(node.health_url) == 200
    assert not sio.seen("good", "disconnect")


@pytest_twisted.ensureDeferred
async def test_handshakes_that_never_finish_are_dropped(nodes: NodeGroup) -> None:
    """No CONNECT: closed after --connect-timeout.  No end of handshake: after Autobahn's 10 s."""
    node = nodes.start("--jwt-secret", SECRET, "--connect-timeout", "1s")
    request = RawWebSocket(node.host, node.port).request_bytes()

    def silent_engines() -> list[float | None]:
        found = []
        for _ in range(20):
            ws = RawWebSocket(node.host, node.port).open()
            ws.engine_open()
            found.append(ws)
        started = time.monotonic()
        closed = []
        for ws in found:
            try:
                ws.wait_closed(max(0.1, 4.0 - (time.monotonic() - started)))
                closed.append(time.monotonic() - started)
            except (TimeoutError, Closed):
                closed.append(None)
            finally:
                ws.close()
        return closed

    def unfinished() -> list[float | None]:
        socks = [half_open(node.host, node.port, request[: len(request) // 2]) for _ in range(10)]
        socks += [half_open(node.host, node.port, b"") for _ in range(10)]
        started = time.monotonic()
        closed = []
        for sock in socks:
            left = max(0.1, 14.0 - (time.monotonic() - started))
            seconds = closed_within(sock, left)
            closed.append(None if seconds is None else time.monotonic() - started)
            sock.close()
        return closed

    engines, handshakes = await gatherResults(
        [deferToThread(silent_engines), deferToThread(unfinished)]
    )
    figure(
        "never-connect",
        "closed_after_s_max",
        round(max(s or 99 for s in engines), 2),
        "s",
        connect_timeout=1.0,
        connections=len(engines),
    )
    figure(
        "half-open-handshake",
        "dropped_after_s_max",
        round(max(s or 99 for s in handshakes), 2),
        "s",
        open_handshake_timeout=10.0,
        connections=len(handshakes),
    )
    assert all(s is not None and s <= 2.0 for s in engines), engines
    assert all(s is not None and s <= 12.5 for s in handshakes), handshakes
    assert healthz(node.health_url) == 200


@pytest_twisted.ensureDeferred
async def test_an_endless_handshake_header_is_refused_early(nodes: NodeGroup) -> None:
    """A request header that never ends must not be buffered whole for the 10 s handshake timeout.

    HTTP servers cap a request header at a few KiB (Node.js 16 KiB, nginx 8 KiB
    by default) and answer 431 or 400.  Here up to 8 MiB are sent as fast as
    the node takes them: the node must close the connection (the client sees a
    reset or end of stream, not merely a stalled send) and hold nothing.  What
    the client gets to send first is mostly the kernel's socket buffers, so it
    is reported, not bounded.
    """
    node = nodes.start("--jwt-secret", SECRET)

    def endless() -> tuple[int, float, bool]:
        sock = half_open(
            node.host, node.port, b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
        )
        line = b"X-Pad: " + b"a" * 1017 + b"\r\n"
        sent, started, closed = 0, time.monotonic(), False
        sock.settimeout(2.0)
        try:
            while sent < 8 * 2**20 and time.monotonic() - started < 8.0:
                sock.sendall(line * 16)
                sent += len(line) * 16
        except ConnectionError:
            closed = True
        except TimeoutError:
            pass  # the node stopped reading: did it also close?
        if not closed:
            closed = closed_within(sock, 2.0) is not None
        sock.close()
        return sent, time.monotonic() - started, closed

    before = rss_kib(node.pid)
    with RssSampler(node.pid) as rss:
        sent, seconds, closed = await deferToThread(endless)
    figure(
        "endless-header",
        "accepted_before_close_kib",
        sent // 1024,
        "KiB",
        closed=closed,
        seconds=round(seconds, 2),
    )
    figure(
        "endless-header",
        "peak_rss_growth",
        round(rss.growth_kib / 1024, 2),
        "MiB",
        rss_before_mib=round(before / 1024, 1),
    )
    assert closed, f"the node took {sent // 1024} KiB of header without closing"
    assert rss.growth_kib < 1024, f"the node grew {rss.growth_kib} KiB on one header"
    assert rss.growth_kib < 4 * 1024
    assert healthz(node.health_url) == 200


@pytest_twisted.ensureDeferred
async def test_thousands_of_namespaces_and_acks_on_one_connection(nodes: NodeGroup, mint) -> None:
    node = nodes.start("--jwt-secret", SECRET)
    ws = RawWebSocket(node.host, node.port).open()
    ws.engine_open()
    assert ws.connect_namespace({"token": mint("many")})[0] == "connect"

    def namespaces() -> Counter[str]:
        answers: Counter[str] = Counter()
        for start in range(0, 5000, 500):
            for i in range(start, start + 500):
                ws.send_text(f'40/n{i}-{"x" * (i % 50)},{{"token":"t"}}')
            for _ in range(500):
                text = ws.recv_text()
                answers[text.split(",", 1)[1] if text.startswith("44/") else text] += 1
        return answers

    def acks() -> tuple[int, int]:
        # Events with ack ids: answered ones (heartbeat), unknown ones (no handler, no answer),
        # and acks for ids the server never used.
        for i in range(3000):
            ws.send_text(f'42{i}["heartbeat"]')
            ws.send_text(f'42{i + 100000}["no-such-event",{i}]')
            ws.send_text(f"43{i + 200000}[{i}]")
        acked = beats = 0
        while acked < 3000:
            text = ws.recv_text()
            acked += text.startswith("43")
            beats += text.startswith('42["heartbeat"')
        return acked, beats

    with RssSampler(node.pid) as rss:
        answers = await deferToThread(namespaces)
        acked, beats = await deferToThread(acks)
    ws.send_text('42["heartbeat"]')
    assert (await deferToThread(ws.recv_text)).startswith('42["heartbeat"')
    ws.close()
    figure(
        "namespaces", "invalid_namespace_answers", sum(answers.values()), "", distinct=dict(answers)
    )
    figure("namespaces+acks", "peak_rss_growth", round(rss.growth_kib / 1024, 2), "MiB")
    figure(
        "acks", "answered", acked, "", heartbeats=beats, unanswered_unknown=3000, stray_acks=3000
    )
    assert answers == Counter({'{"message":"Invalid namespace"}': 5000}), answers
    assert (acked, beats) == (3000, 3000)
    assert rss.growth_kib < 6 * 1024
    assert healthz(node.health_url) == 200


@pytest_twisted.ensureDeferred
async def test_room_joins_and_presence_subscriptions_are_bounded(
    clean_redis: RedisServer, nodes: NodeGroup, sio: SioDriver, mint, tmp_path: Path
) -> None:
    keys = tmp_path / "api-keys"
    keys.write_text(KEYS_TEXT)
    keys.chmod(0o600)
    node = nodes.start(
        "--jwt-secret",
        SECRET,
        "--redis",
        clean_redis.url,
        "--server-id",
        "n1",
        "--api-listen",
        "tcp:0:interface=127.0.0.1",
        "--api-key-file",
        str(keys),
        "--max-rooms-per-user",
        "200",
        "--max-presence-subscriptions",
        "50",
        ready=[r"node \S+ started", r"bus subscribed"],
    )
    api_port = node.find(r"api listening on [0-9.]+:(\d+)")[1]
    api = ApiClient(f"http://127.0.0.1:{api_port}", FULL_KEY)
    await sio.connected("u", node.url, auth={"token": mint("alice")}, query={"deviceId": "d"})
    try:
        statuses: Counter[int] = Counter()
        codes: Counter[str] = Counter()
        for batch in range(30):  # 3000 rooms, 100 per call
            rooms = [f"r{batch}-{i}" for i in range(100)]
            reply = await api.post("/v1/tenants/t1/users/alice/rooms", {"join": rooms})
            statuses[reply.status] += 1
            if reply.status != 200:
                codes[reply.code] += 1
        stored = (await api.get("/v1/tenants/t1/users/alice/rooms")).json["rooms"]
    finally:
        await api.close()
    # The command channel: a join past the limit changes nothing and is logged.
    since = node.mark()
    with CommandClient(clean_redis.url) as commands:
        commands.join("t1", "alice", [f"extra-{i}" for i in range(100)])
    await node.log_match(r"command join refused: too_many_rooms", 3.0, since)
    assert len(clean_redis.command("SMEMBERS", "caas:rooms:t1:alice")) == 200

    # Presence: at most 50 users followed by one connection.
    def ask(ids: list[str]) -> str:
        return sio.emit("u", "presence:subscribe", {"userIds": ids}, ack=True)

    first = await sio.ack("u", ask([f"p{i}" for i in range(40)]))
    second = await sio.ack("u", ask([f"q{i}" for i in range(40)]))
    too_long = await sio.ack("u", ask([f"z{i}" for i in range(101)]))
    figure(
        "rooms",
        "joined_before_refusal",
        len(stored),
        "rooms",
        limit=200,
        refused_calls=statuses[409],
        codes=dict(codes),
    )
    figure("presence", "subscription_refusal", second[0].get("error"), "", first=first[0], limit=50)
    assert statuses == Counter({200: 2, 409: 28}), statuses
    assert codes == Counter({"too_many_rooms": 28})
    assert len(stored) == 200
    assert first == [{"subscribed": 40}]
    assert second == [{"error": "too_many_subscriptions", "max": 50}]
    assert too_long == [{"error": "invalid_user_ids"}]
    assert healthz(node.health_url) == 200
