"""Reaching users from other services: commands applied on every node, and queries.

:class:`Operations` is what the HTTP API, the Redis channel and the admin
tool share.  A command is *published* (to every node, see
:mod:`.commands`), and each node *applies* it to its own connections with
:class:`LocalApplier`; that keeps one publish per command whatever the number
of devices or room members.  Queries read the registry and the presence
store directly.

Application rooms are tenant-scoped: the room ``chat-42`` of tenant ``acme``
is ``room:acme:chat-42`` inside, and no command of another tenant can name it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from twisted.logger import Logger

from ..naming import escape, user_room
from ..registry.health import BackendHealth
from ..registry.interfaces import Entry, Registry, RegistryUnavailable
from ..server import Namespace, Socket
from ..server.adapter import RoomLimitExceeded
from .commands import NO_DATA, Command, CommandError
from .devices import LocalKicker
from .identity import identity_of
from .presence import PresenceState, PresenceStore

__all__ = [
    "LocalApplier",
    "MemoryUserRooms",
    "Operations",
    "UserRooms",
    "app_room",
    "join_user_rooms",
]


def app_room(tenant_id: str, room: str) -> str:
    """The internal name of an application room of one tenant."""
    return f"room:{escape(tenant_id)}:{escape(room)}"


class UserRooms(Protocol):
    """Rooms a user joined for all of its connections, present and future."""

    async def add(self, tenant_id: str, user_id: str, rooms: Sequence[str]) -> None:
        """:raises CommandError: ``too_many_rooms`` past the limit."""

    async def remove(self, tenant_id: str, user_id: str, rooms: Sequence[str]) -> None: ...

    async def rooms_of(self, tenant_id: str, user_id: str) -> list[str]: ...


class MemoryUserRooms:
    """User rooms of a single node."""

    def __init__(self, max_rooms: int) -> None:
        self.max_rooms = max_rooms
        self._rooms: dict[tuple[str, str], set[str]] = {}

    async def add(self, tenant_id: str, user_id: str, rooms: Sequence[str]) -> None:
        current = self._rooms.setdefault((tenant_id, user_id), set())
        if len(current | set(rooms)) > self.max_rooms:
            raise CommandError("too_many_rooms", f"a user may be in {self.max_rooms} rooms")
        current.update(rooms)

    async def remove(self, tenant_id: str, user_id: str, rooms: Sequence[str]) -> None:
        current = self._rooms.get((tenant_id, user_id))
        if current is not None:
            current.difference_update(rooms)
            if not current:
                del self._rooms[(tenant_id, user_id)]

    async def rooms_of(self, tenant_id: str, user_id: str) -> list[str]:
        return sorted(self._rooms.get((tenant_id, user_id), ()))


def join_user_rooms(store: UserRooms, health: BackendHealth) -> Callable[[Socket], Awaitable[None]]:
    """Middleware: a new connection joins the rooms its user is in.

    When the store cannot answer the connection is accepted without them (the
    outage is logged once, by ``health``), like registration fails open.
    """

    async def middleware(socket: Socket) -> None:
        identity = identity_of(socket)
        try:
            rooms = await store.rooms_of(identity.tenant_id, identity.user_id)
        except RegistryUnavailable as e:
            health.failed("user rooms", e)
            return
        except Exception:
            LocalApplier.log.failure("reading the rooms of a user failed")
            return
        _join(socket, [app_room(identity.tenant_id, room) for room in rooms])

    return middleware


def _join(socket: Socket, rooms: Sequence[str]) -> None:
    try:
        socket.join(*rooms)
    except RoomLimitExceeded as e:
        LocalApplier.log.warn("socket {socket_id}: {error}", socket_id=socket.id, error=str(e))


class LocalApplier:
    """Applies a command to this node's connections (every node does the same)."""

    log = Logger()

    def __init__(self, nsp: Namespace, local: LocalKicker, rooms: UserRooms) -> None:
        self._nsp = nsp
        self._local = local
        self._rooms = rooms
        self.applied = 0

    def _targets(self, command: Command) -> list[Socket]:
        assert command.user_id is not None
        members = self._nsp.adapter.recipients([user_room(command.tenant_id, command.user_id)])
        if command.device_id is None:
            return list(members)
        return [s for s in members if identity_of(s).device_id == command.device_id]

    async def apply(self, command: Command) -> None:
        self.applied += 1
        if command.op == "emit":
            args = () if command.data is NO_DATA else (command.data,)
            if command.room is not None:
                self._nsp.to(app_room(command.tenant_id, command.room)).emit(
                    command.event or "", *args
                )
            else:
                for socket in self._targets(command):
                    socket.emit(command.event or "", *args)
        elif command.op in ("join", "leave"):
            await self._membership(command)
        elif command.op == "disconnect":
            for socket in self._targets(command):
                if command.reconnect:
                    self._local.kick_socket(socket, command.reason, reconnect=True)
                else:
                    self._local.kick_socket(socket, command.reason)

    async def _membership(self, command: Command) -> None:
        assert command.user_id is not None
        rooms = [app_room(command.tenant_id, room) for room in command.rooms]
        # Local sockets first, synchronously: a command published after this
        # one (an emit to the room) must find them joined.
        for socket in self._targets(command):
            if command.op == "join":
                _join(socket, rooms)
            else:
                socket.leave(*rooms)
        if command.device_id is None:
            # Every node writes the same membership: idempotent, and a node that
            # missed the store still applies to its own connections.
            if command.op == "join":
                await self._rooms.add(command.tenant_id, command.user_id, command.rooms)
            else:
                await self._rooms.remove(command.tenant_id, command.user_id, command.rooms)


class Operations:
    """What other services can do, from any node, for the whole cluster."""

    def __init__(
        self,
        registry: Registry,
        presence: PresenceStore,
        rooms: UserRooms,
        publish: Callable[[Command], Awaitable[None]],
    ) -> None:
        self._registry = registry
        self._presence = presence
        self._rooms = rooms
        self._publish = publish

    async def send(self, command: Command) -> None:
        """Deliver ``command`` to every node (this one included)."""
        if command.op == "join" and command.device_id is None:
            # Check the limit here, where the caller can still be told.
            assert command.user_id is not None
            await self._rooms.add(command.tenant_id, command.user_id, command.rooms)
        await self._publish(command)

    async def connections(self, tenant_id: str, user_id: str) -> list[Entry]:
        return sorted(
            await self._registry.user_entries(tenant_id, user_id), key=lambda e: e.connected_at
        )

    async def presence(self, tenant_id: str, user_ids: Sequence[str]) -> list[PresenceState]:
        return await self._presence.get(tenant_id, user_ids)

    async def user_rooms(self, tenant_id: str, user_id: str) -> list[str]:
        return await self._rooms.rooms_of(tenant_id, user_id)
