"""Commands from other services, applied on a node, and their validation."""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from caas_socket.app import CaasApp
from caas_socket.app.commands import Command, CommandError, decode_command, encode_command
from caas_socket.app.devices import LocalKicker
from caas_socket.app.operations import LocalApplier, MemoryUserRooms, Operations, join_user_rooms
from caas_socket.app.presence import MemoryPresenceStore
from caas_socket.auth import JWTVerifier, KeySet, mint_token
from caas_socket.registry.health import BackendHealth
from caas_socket.registry.interfaces import DeviceLimitPolicy
from caas_socket.registry.memory import MemoryRegistry
from caas_socket.server import Settings, SocketServer
from tests.support.fakes import RecordingTransport, open_client

SECRET = b"unit-test-secret-of-at-least-32-bytes!!"


class Node:
    def __init__(self) -> None:
        self.clock = Clock()
        self.server = SocketServer(self.clock, Settings())
        self.registry = MemoryRegistry.standalone(self.clock)
        self.local = LocalKicker()
        CaasApp(
            self.server,
            verifier=JWTVerifier(keys=KeySet.from_secret(SECRET), now=self.clock.seconds),
            registry=self.registry,
            server_id="n1",
            clock=self.clock,
            max_devices=5,
            policy=DeviceLimitPolicy.REJECT,
            local_kicker=self.local,
        )
        self.rooms = MemoryUserRooms(max_rooms=3)
        self.server.main.use(join_user_rooms(self.rooms, BackendHealth(self.clock)))
        self.applier = LocalApplier(self.server.main, self.local, self.rooms)
        presence = MemoryPresenceStore(
            self.clock, self.server.wheel, lambda t, u: (), lambda c: None
        )
        self.ops = Operations(self.registry, presence, self.rooms, self.applier.apply)

    def connect(self, device: str, user: str = "alice", tenant: str = "acme") -> RecordingTransport:
        transport, _ = open_client(self.server, {"deviceId": device})
        token = mint_token(SECRET, sub=user, tenant_id=tenant, now=self.clock.seconds)
        transport.receive("40" + json.dumps({"token": token}))
        (answer,) = transport.take()
        assert answer.startswith('40{"sid"'), answer
        return transport

    def send(self, **fields: Any) -> None:
        command = decode_command(json.dumps({"v": 1, **fields}))
        failures: list[Any] = []
        Deferred.fromCoroutine(self.ops.send(command)).addErrback(failures.append)
        if failures:
            failures[0].raiseException()


def test_emit_to_a_user_reaches_all_devices_of_that_tenant_only() -> None:
    node = Node()
    phone, laptop = node.connect("phone"), node.connect("laptop")
    twin = node.connect("phone", tenant="globex")
    node.send(op="emit", tenantId="acme", userId="alice", event="msg", data={"id": 1})
    assert phone.take() == laptop.take() == ['42["msg",{"id":1}]']
    assert twin.take() == []


def test_emit_to_one_device() -> None:
    node = Node()
    phone, laptop = node.connect("phone"), node.connect("laptop")
    node.send(op="emit", tenantId="acme", userId="alice", deviceId="laptop", event="ping")
    assert laptop.take() == ['42["ping"]'] and phone.take() == []  # no data: no argument


def test_joined_rooms_reach_current_and_future_connections_of_the_user() -> None:
    node = Node()
    phone = node.connect("phone")
    bob = node.connect("x", user="bob")
    node.send(op="join", tenantId="acme", userId="alice", rooms=["chat-42"])
    laptop = node.connect("laptop")  # joins at connect
    other_tenant = node.connect("phone", tenant="globex")
    node.send(op="join", tenantId="globex", userId="alice", rooms=["chat-42"])
    node.send(op="emit", tenantId="acme", room="chat-42", event="msg", data="hi")
    assert phone.take() == laptop.take() == ['42["msg","hi"]']
    assert bob.take() == [] and other_tenant.take() == []
    node.send(op="leave", tenantId="acme", userId="alice", deviceId="phone", rooms=["chat-42"])
    node.send(op="emit", tenantId="acme", room="chat-42", event="msg", data="again")
    assert phone.take() == [] and laptop.take() == ['42["msg","again"]']


def test_user_rooms_are_bounded() -> None:
    node = Node()
    node.send(op="join", tenantId="acme", userId="alice", rooms=["a", "b", "c"])
    with pytest.raises(CommandError, match="3 rooms"):
        node.send(op="join", tenantId="acme", userId="alice", rooms=["d"])


@pytest.mark.parametrize(
    ("reconnect", "expected"),
    [
        (False, ['42["caas:kicked",{"reason":"logout"}]', "41"]),
        (True, ['42["caas:kicked",{"reason":"logout","reconnect":true}]']),
    ],
)
def test_disconnect_a_user_with_a_reason_and_a_mode(reconnect: bool, expected: list[str]) -> None:
    node = Node()
    phone = node.connect("phone")
    node.send(
        op="disconnect", tenantId="acme", userId="alice", reason="logout", reconnect=reconnect
    )
    assert phone.take() == expected
    assert phone.closed is reconnect


def test_connections_lists_the_registry_entries_of_the_user() -> None:
    node = Node()
    node.connect("phone")
    node.clock.advance(1)
    node.connect("laptop")
    got: list[Any] = []
    Deferred.fromCoroutine(node.ops.connections("acme", "alice")).addCallback(got.extend)
    assert [e.device_id for e in got] == ["phone", "laptop"]
    Deferred.fromCoroutine(node.ops.connections("globex", "alice")).addCallback(got.append)
    assert got[-1] == []


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("not json", "invalid_json"),
        ("[]", "invalid_command"),
        ('{"op":"emit"}', "unsupported_version"),
        ('{"v":1,"op":"nope"}', "invalid_op"),
        ('{"v":1,"op":"emit","event":"x","userId":"u"}', "missing_field"),
        ('{"v":1,"op":"emit","tenantId":"t","event":"x"}', "missing_field"),
        (
            '{"v":1,"op":"emit","tenantId":"t","room":"r","userId":"u","event":"x"}',
            "invalid_target",
        ),
        (
            '{"v":1,"op":"emit","tenantId":"t","deviceId":"d","room":"r","event":"x"}',
            "invalid_target",
        ),
        ('{"v":1,"op":"emit","tenantId":"t","userId":"u","event":"connect"}', "invalid_field"),
        ('{"v":1,"op":"emit","tenantId":"t","userId":"u"}', "invalid_field"),
        ('{"v":1,"op":"join","tenantId":"t","userId":"u","rooms":[]}', "invalid_field"),
        ('{"v":1,"op":"join","tenantId":"t","userId":"u","rooms":[1]}', "invalid_field"),
        (
            '{"v":1,"op":"disconnect","tenantId":"t","userId":"u","reconnect":"yes"}',
            "invalid_field",
        ),
        ('{"v":1,"op":"emit","tenantId":"","userId":"u","event":"x"}', "invalid_field"),
    ],
)
def test_invalid_commands_name_what_is_wrong(raw: str, code: str) -> None:
    with pytest.raises(CommandError) as info:
        decode_command(raw)
    assert info.value.code == code


def test_commands_round_trip_through_their_wire_form() -> None:
    for command in [
        Command("emit", "t", user_id="u", event="e", data={"x": [1, "é"]}),
        Command("emit", "t", room="r", event="e"),
        Command("join", "t", user_id="u", device_id="d", rooms=("a", "b")),
        Command("disconnect", "t", user_id="u", reason="bye", reconnect=True),
    ]:
        assert decode_command(encode_command(command)) == command
