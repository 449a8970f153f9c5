"""Activity, idle sweep, token expiry, presence and drain, driven by a Clock."""

from __future__ import annotations

import json
import random
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from caas_socket.app import CaasApp
from caas_socket.app.activity import ActivityTracker
from caas_socket.app.devices import LocalKicker
from caas_socket.app.expiry import TokenExpiry
from caas_socket.app.presence import MemoryPresenceStore, Presence, PresenceChange
from caas_socket.auth import JWTVerifier, KeySet, mint_token
from caas_socket.drain import Drainer
from caas_socket.registry.health import BackendHealth
from caas_socket.registry.interfaces import DeviceLimitPolicy, Entry
from caas_socket.registry.memory import MemoryRegistry
from caas_socket.server import Settings, SocketServer
from tests.support.fakes import RecordingTransport, open_client

SECRET = b"unit-test-secret-of-at-least-32-bytes!!"
START = 1_800_000_000.0


class Node:
    """One node with every CaaS feature, on recording transports."""

    def __init__(self, grace: float = 5.0, refresh_event: str | None = None) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.server = SocketServer(self.clock, Settings(ping_interval=1000, ping_timeout=1000))
        self.registry = MemoryRegistry.standalone(self.clock)
        self.local = LocalKicker()
        self.health = BackendHealth(self.clock)
        verifier = JWTVerifier(keys=KeySet.from_secret(SECRET), now=self.clock.seconds)
        CaasApp(
            self.server,
            verifier=verifier,
            registry=self.registry,
            server_id="n1",
            clock=self.clock,
            max_devices=5,
            policy=DeviceLimitPolicy.REJECT,
            local_kicker=self.local,
            health=self.health,
        )
        TokenExpiry(
            self.clock,
            self.server.wheel,
            verifier,
            leeway=2.0,
            refresh_event=refresh_event,
            lead=10,
        ).install(self.server.main)
        self.changes: list[PresenceChange] = []
        users = self.registry.store.users

        def publish(change: PresenceChange) -> None:
            self.changes.append(change)
            self.presence.deliver(change)

        self.presence = Presence(
            self.server.main,
            MemoryPresenceStore(
                self.clock, self.server.wheel, lambda t, u: users.get((t, u), {}).keys(), publish
            ),
            grace=grace,
            max_subscriptions=3,
        )
        self.activity = ActivityTracker(
            self.clock,
            self.registry,
            self.local,
            self.health,
            server_id="n1",
            idle_timeout=300,
            flush_interval=30,
        )

    def connect(
        self, device: str, user: str = "alice", tenant: str = "acme", ttl: float = 3600
    ) -> RecordingTransport:
        transport, _ = open_client(self.server, {"deviceId": device})
        token = mint_token(SECRET, sub=user, tenant_id=tenant, ttl=ttl, now=self.clock.seconds)
        transport.receive("40" + json.dumps({"token": token}))
        (answer,) = transport.take()
        assert answer.startswith('40{"sid"'), answer
        return transport

    def stored(self, user: str = "alice") -> dict[str, Entry]:
        return dict(self.registry.store.users.get(("acme", user), {}))

    def run(self, coro: Any) -> None:
        Deferred.fromCoroutine(coro)


# -- activity ------------------------------------------------------------------


def test_activity_is_flushed_in_one_batch_for_the_connections_that_sent_messages() -> None:
    node = Node()
    busy, idle = node.connect("busy"), node.connect("idle")
    node.run(node.activity.flush())  # first sample: nothing moved yet
    node.clock.advance(30)
    busy.receive('42["heartbeat"]')
    idle.receive("3")  # a pong is not activity
    node.run(node.activity.flush())
    stored = node.stored()
    assert stored["busy"].last_activity == int((START + 30) * 1000)
    assert stored["idle"].last_activity == int(START * 1000)


def test_sweep_closes_connections_idle_longer_than_the_timeout() -> None:
    node = Node()
    busy, idle = node.connect("busy"), node.connect("idle")
    for _ in range(11):
        node.clock.advance(30)
        busy.receive('42["heartbeat"]')
        node.run(node.activity.flush())
    node.run(node.activity.sweep())
    assert idle.closed and not busy.closed
    assert set(node.stored()) == {"busy"}


def test_sweep_removes_ghost_entries_of_this_node() -> None:
    node = Node()
    ghost = Entry("gone", "alice", "acme", "ghost", "n1", 0, 0)
    node.registry.store.put(ghost)
    node.clock.advance(400)
    node.run(node.activity.sweep())
    assert "ghost" not in node.stored()


def test_stale_entries_of_other_nodes_are_reported_to_their_owner() -> None:
    node = Node()
    asked: list[tuple[str, int]] = []
    node.activity._ask_owner = lambda entry, before: asked.append((entry.socket_id, before))
    node.registry.store.put(Entry("far", "bob", "acme", "d1", "n2", 0, 0))
    node.clock.advance(400)
    node.run(node.activity.sweep())
    assert [sid for sid, _ in asked] == ["far"]


# -- token expiry ----------------------------------------------------------------


def test_the_transport_closes_when_the_token_expires_plus_leeway() -> None:
    node = Node()
    transport = node.connect("d1", ttl=60)
    node.clock.advance(61.9)
    assert not transport.closed
    node.clock.advance(0.2)
    assert transport.closed
    assert node.stored() == {}


def test_an_in_band_refresh_extends_the_connection() -> None:
    node = Node()
    transport = node.connect("d1", ttl=60)
    node.clock.advance(50)
    fresh = mint_token(SECRET, sub="alice", tenant_id="acme", ttl=600, now=node.clock.seconds)
    transport.receive('421["caas:refresh-token",' + json.dumps({"token": fresh}) + "]")
    (ack,) = transport.take()
    expires_ms = int((START + 650) * 1000)
    assert ack == f'431[{{"expiresAt":{expires_ms}}}]'
    node.clock.advance(100)
    assert not transport.closed


def test_a_refresh_for_another_user_or_a_bad_token_is_refused() -> None:
    node = Node()
    transport = node.connect("d1", ttl=60)
    other = mint_token(SECRET, sub="mallory", tenant_id="acme", now=node.clock.seconds)
    transport.receive('421["caas:refresh-token",' + json.dumps({"token": other}) + "]")
    transport.receive('422["caas:refresh-token","garbage"]')
    assert transport.take() == [
        '431[{"error":"other_identity"}]',
        '432[{"error":"malformed_token"}]',
    ]
    node.clock.advance(63)
    assert transport.closed


def test_the_server_asks_for_a_fresh_token_before_expiry() -> None:
    node = Node(refresh_event="caas:token-expiring")
    transport = node.connect("d1", ttl=60)
    node.clock.advance(50)
    (ask,) = transport.take()
    assert ask.startswith('420["caas:token-expiring",{"expiresAt":')
    fresh = mint_token(SECRET, sub="alice", tenant_id="acme", ttl=600, now=node.clock.seconds)
    transport.receive("430" + json.dumps([fresh]))
    node.clock.advance(100)
    assert not transport.closed


# -- presence --------------------------------------------------------------------


def statuses(node: Node) -> list[tuple[str, str | None, str]]:
    return [(c.user_id, c.device_id, c.status) for c in node.changes]


def test_presence_goes_online_at_once_and_offline_after_the_grace() -> None:
    node = Node(grace=5)
    phone = node.connect("phone")
    assert statuses(node) == [("alice", None, "online"), ("alice", "phone", "online")]
    phone.close()
    node.clock.advance(0)  # the end of the reactor turn: the check is scheduled
    node.clock.advance(4.9)
    assert len(node.changes) == 2
    node.clock.advance(0.2)
    assert statuses(node)[2:] == [("alice", "phone", "offline"), ("alice", None, "offline")]
    versions = [c.version for c in node.changes]
    assert versions == sorted(set(versions))


def test_a_reconnect_within_the_grace_emits_nothing() -> None:
    node = Node(grace=5)
    node.connect("phone").close()
    node.clock.advance(2)
    node.connect("phone")
    node.clock.advance(10)
    assert statuses(node) == [("alice", None, "online"), ("alice", "phone", "online")]


def test_subscribers_get_changes_of_their_own_tenant_only() -> None:
    node = Node()
    watcher = node.connect("w", user="carol")
    other_tenant = node.connect("w", user="carol", tenant="globex")
    watcher.receive('421["presence:subscribe",{"userIds":["bob"]}]')
    other_tenant.receive('421["presence:subscribe",{"userIds":["bob"]}]')
    assert watcher.take() == ['431[{"subscribed":1}]']
    other_tenant.take()
    node.connect("laptop", user="bob")
    events = [json.loads(f[2:]) for f in watcher.take()]
    assert [(e[1]["deviceId"], e[1]["status"]) for e in events] == [
        (None, "online"),
        ("laptop", "online"),
    ]
    assert other_tenant.take() == []
    watcher.receive('422["presence:get",{"userIds":["bob","nobody"]}]')
    (answer,) = watcher.take()
    states = json.loads(answer[3:])[0]
    assert [(s["userId"], s["status"], s["devices"]) for s in states] == [
        ("bob", "online", ["laptop"]),
        ("nobody", "offline", []),
    ]


def test_presence_subscriptions_and_queries_are_bounded() -> None:
    node = Node()
    watcher = node.connect("w", user="carol")
    watcher.receive('421["presence:subscribe",{"userIds":["a","b","c","d"]}]')
    watcher.receive('422["presence:get",{"userIds":[]}]')
    watcher.receive('423["presence:get",{"userIds":[1]}]')
    assert watcher.take() == [
        '431[{"error":"too_many_subscriptions","max":3}]',
        '432[{"error":"invalid_user_ids"}]',
        '433[{"error":"invalid_user_ids"}]',
    ]


# -- drain -----------------------------------------------------------------------


def test_drain_closes_every_connection_in_paced_batches() -> None:
    clock = Clock()
    server = SocketServer(clock, Settings())
    transports = [open_client(server)[0] for _ in range(1000)]
    drainer = Drainer(clock, server, period=30, rate=100, rng=random.Random(7))
    done: list[None] = []
    Deferred.fromCoroutine(drainer.drain()).addCallback(done.append)
    assert drainer.draining
    clock.advance(5)
    closed_at_5 = sum(t.closed for t in transports)
    assert 0 < closed_at_5 < 1000
    clock.pump([0.5] * 20)
    assert all(t.closed for t in transports) and done == [None]
    assert drainer.closed == 1000 and drainer.remaining == 0


def test_drain_of_a_small_node_is_quick() -> None:
    clock = Clock()
    server = SocketServer(clock, Settings())
    transports = [open_client(server)[0] for _ in range(3)]
    done: list[None] = []
    Deferred.fromCoroutine(Drainer(clock, server, period=30).drain()).addCallback(done.append)
    clock.advance(0.1)
    assert all(t.closed for t in transports) and done == [None]
