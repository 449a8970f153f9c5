"""The CaaS behaviour on the server API, with the memory registry and a Clock."""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from caas_socket.app import CaasApp
from caas_socket.auth import JWTVerifier, KeySet, mint_token
from caas_socket.registry.interfaces import DeviceLimitPolicy, Entry, Registration
from caas_socket.registry.memory import MemoryRegistry
from caas_socket.server import Settings, SocketServer
from tests.support.fakes import RecordingTransport, open_client

SECRET = b"unit-test-secret-of-at-least-32-bytes!!"
NOW = 1_800_000_000.0


class Node:
    def __init__(self, max_devices: int = 5, policy: str = "reject") -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.server = SocketServer(self.clock, Settings())
        self.registry = MemoryRegistry.standalone(self.clock)
        self.app = CaasApp(
            self.server,
            verifier=JWTVerifier(keys=KeySet.from_secret(SECRET), now=self.clock.seconds),
            registry=self.registry,
            server_id="node-a",
            clock=self.clock,
            max_devices=max_devices,
            policy=DeviceLimitPolicy(policy),
        )

    def token(self, sub: str = "alice", tenant: str = "acme", **extra: Any) -> str:
        return mint_token(SECRET, sub=sub, tenant_id=tenant, now=self.clock.seconds, **extra)

    def connect(
        self, token: str | None, device: str | None = "d1"
    ) -> tuple[RecordingTransport, str]:
        query = {} if device is None else {"deviceId": device}
        transport, _ = open_client(self.server, query)
        auth = "" if token is None else json.dumps({"token": token})
        transport.receive("40" + auth)
        frames = transport.take()
        assert frames, "no answer to CONNECT"
        return transport, frames[0]  # type: ignore[return-value]

    def entries(self, user: str = "alice", tenant: str = "acme") -> list[Entry]:
        result: list[Entry] = []
        Deferred.fromCoroutine(self.registry.user_entries(tenant, user)).addCallback(result.extend)
        return result


def sid(answer: str) -> str:
    assert answer.startswith('40{"sid":'), answer
    return str(json.loads(answer[2:])["sid"])


def test_a_valid_token_connects_and_registers_the_device() -> None:
    node = Node()
    _, answer = node.connect(node.token(), "phone")
    (entry,) = node.entries()
    assert entry.socket_id == sid(answer)
    assert (entry.user_id, entry.tenant_id, entry.device_id, entry.server_id) == (
        "alice",
        "acme",
        "phone",
        "node-a",
    )
    assert entry.connected_at == entry.last_activity == int(NOW * 1000)


@pytest.mark.parametrize(
    ("make_token", "device", "code"),
    [
        (lambda n: None, "d1", "missing_token"),
        (lambda n: "not-a-jwt", "d1", "malformed_token"),
        (lambda n: n.token(ttl=-100), "d1", "expired"),
        (
            lambda n: mint_token(b"another-secret-of-at-least-32-bytes!!!", sub="a", tenant_id="t"),
            "d1",
            "invalid_signature",
        ),
        (lambda n: n.token(tenant=""), "d1", "missing_claim"),
        (lambda n: n.token(), "bad device id", "invalid_device_id"),
    ],
)
def test_authentication_failures_name_the_failed_check(
    make_token: Any, device: str, code: str
) -> None:
    node = Node()
    transport, answer = node.connect(make_token(node), device)
    assert answer == f'44{{"message":"Authentication failed","data":{{"code":"{code}"}}}}'
    assert node.entries() == [] and node.server.main.sockets == {}
    assert not transport.closed  # the client closes it; the connect timeout bounds it


def test_missing_device_id_gets_a_generated_one() -> None:
    node = Node()
    node.connect(node.token(), None)
    (entry,) = node.entries()
    assert len(entry.device_id) == 20


def test_device_limit_rejects_the_next_device_and_writes_nothing() -> None:
    node = Node(max_devices=2)
    node.connect(node.token(), "d1")
    node.connect(node.token(), "d2")
    _, answer = node.connect(node.token(), "d3")
    assert (
        answer
        == '44{"message":"Device limit reached","data":{"code":"device_limit","maxDevices":2}}'
    )
    assert sorted(e.device_id for e in node.entries()) == ["d1", "d2"]
    # the limit is per user and per tenant
    _, other_user = node.connect(node.token(sub="bob"), "d3")
    _, other_tenant = node.connect(node.token(tenant="globex"), "d3")
    sid(other_user), sid(other_tenant)


def test_same_device_replaces_and_kicks_its_older_connection() -> None:
    node = Node(max_devices=1)
    old, first = node.connect(node.token(), "d1")
    _new, second = node.connect(node.token(), "d1")
    assert old.take() == ['42["caas:kicked",{"reason":"replaced"}]', "41"]
    (entry,) = node.entries()
    assert entry.socket_id == sid(second) != sid(first)
    # the late disconnect of the old connection leaves the new entry alone
    old.close()
    assert node.entries() == [entry]


def test_evict_oldest_kicks_the_oldest_device() -> None:
    node = Node(max_devices=2, policy="evict-oldest")
    oldest, _ = node.connect(node.token(), "d1")
    node.clock.advance(1)
    node.connect(node.token(), "d2")
    node.clock.advance(1)
    _, answer = node.connect(node.token(), "d3")
    sid(answer)
    assert oldest.take() == ['42["caas:kicked",{"reason":"evicted"}]', "41"]
    assert sorted(e.device_id for e in node.entries()) == ["d2", "d3"]


def test_disconnect_removes_the_entry() -> None:
    node = Node()
    transport, _ = node.connect(node.token(), "d1")
    transport.close()
    assert node.entries() == []


class SlowRegistry(MemoryRegistry):
    """A registry whose register() waits for the test to release it."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(MemoryRegistry.standalone(clock).store)
        self.gate: Deferred[None] = Deferred()

    async def register(
        self, entry: Entry, max_devices: int, policy: DeviceLimitPolicy
    ) -> Registration:
        result = await super().register(entry, max_devices, policy)
        await self.gate
        return result


def test_a_client_that_leaves_while_registering_leaves_nothing_behind() -> None:
    node = Node()
    slow = SlowRegistry(node.clock)
    node.server = SocketServer(node.clock, Settings())
    node.registry = slow
    CaasApp(
        node.server,
        verifier=JWTVerifier(keys=KeySet.from_secret(SECRET), now=node.clock.seconds),
        registry=slow,
        server_id="node-a",
        clock=node.clock,
        max_devices=5,
        policy=DeviceLimitPolicy.REJECT,
    )
    transport, _ = open_client(node.server, {"deviceId": "d1"})
    transport.receive("40" + json.dumps({"token": node.token()}))
    assert len(node.entries()) == 1  # written, the answer still on its way
    transport.close()
    slow.gate.callback(None)
    assert node.entries() == []
    assert node.server.main.sockets == {}


def test_heartbeat_answers_that_socket_only() -> None:
    node = Node()
    a, _ = node.connect(node.token(), "d1")
    b, _ = node.connect(node.token(), "d2")
    node.clock.advance(0.5)
    a.receive('42["heartbeat"]')
    server_time = int((NOW + 0.5) * 1000)
    assert a.take() == [f'42["heartbeat",{{"serverTime":{server_time}}}]']
    assert b.take() == []


def test_sync_reaches_the_other_devices_of_the_same_user_of_the_same_tenant_only() -> None:
    node = Node()
    phone, _ = node.connect(node.token(), "phone")
    laptop, _ = node.connect(node.token(), "laptop")
    tablet, _ = node.connect(node.token(), "tablet")
    bob, _ = node.connect(node.token(sub="bob"), "phone")
    twin, _ = node.connect(node.token(tenant="globex"), "phone")  # same user id, other tenant
    phone.receive('42["sync",{"read":42,"é":[1,2]}]')
    expected = ['42["sync",{"read":42,"é":[1,2]}]']
    assert laptop.take() == expected and tablet.take() == expected
    assert phone.take() == [] and bob.take() == [] and twin.take() == []


def test_tenant_and_user_ids_with_separators_cannot_collide() -> None:
    node = Node()
    a, _ = node.connect(node.token(sub="c", tenant="a:b"), "d1")
    a2, _ = node.connect(node.token(sub="c", tenant="a:b"), "d2")
    b, _ = node.connect(node.token(sub="b:c", tenant="a"), "d1")
    a.receive('42["sync",1]')
    assert a2.take() == ['42["sync",1]'] and b.take() == []
