"""Device registration: one registry entry per live connection, within the limit."""

from __future__ import annotations

from typing import Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ..registry.health import BackendHealth
from ..registry.interfaces import (
    DeviceLimitPolicy,
    Entry,
    Fenced,
    Registry,
    RegistryUnavailable,
)
from ..server import ConnectionRefused, Socket
from .identity import identity_of

__all__ = ["ENTRY", "KICKED_EVENT", "Kicker", "LocalKicker", "RegisterDevice"]

#: Key of the registry :class:`Entry` in ``socket.data``.
ENTRY = "caas.entry"
#: Event sent to a connection just before it is kicked, with ``{"reason": ...}``.
KICKED_EVENT = "caas:kicked"


class Kicker(Protocol):
    """Ends a registered connection, on whichever node it lives."""

    def kick(self, entry: Entry, reason: str) -> None:
        """End ``entry``'s connection so that its client does not reconnect."""


class LocalKicker:
    """The connections this node registered, and how to kick one of them.

    ``registered`` holds the sockets whose entry is (or should be) in the
    registry; ``pending`` the socket ids whose registration is under way.  Both
    tell reconciliation which entries of this node are alive.
    """

    log = Logger()

    def __init__(self) -> None:
        self.registered: dict[str, Socket] = {}
        self.pending: set[str] = set()
        #: Set while the node drains: the final lease release removes every
        #: entry in batches, so closing connections do not unregister one by one.
        self.releasing_all = False

    def live_entries(self) -> list[Entry]:
        """The entries of the connections alive on this node."""
        return [socket.data[ENTRY] for socket in self.registered.values()]

    def kick(self, entry: Entry, reason: str) -> None:
        socket = self.registered.get(entry.socket_id)
        if socket is not None:
            self.kick_socket(socket, reason)

    def kick_socket(self, socket: Socket, reason: str, *, reconnect: bool = False) -> None:
        """``caas:kicked`` ``{"reason"}``, then a DISCONNECT: the client stays away.

        With ``reconnect`` the event says ``"reconnect": true`` and the transport
        is closed instead, so the client comes back (to any node).
        """
        self.log.info(
            "kicking socket {socket_id}: {reason}",
            socket_id=socket.id,
            reason=reason,
            reconnect=reconnect,
            event="kick",
            **socket.tags,
        )
        if not socket.connected:
            socket.close_connection("forced close")
        elif reconnect:
            socket.emit(KICKED_EVENT, {"reason": reason, "reconnect": True})
            socket.close_connection("forced close")
        else:
            socket.emit(KICKED_EVENT, {"reason": reason})
            socket.disconnect()


class RegisterDevice:
    """Middleware: register the device, enforcing the user's device limit.

    The entry is released by a socket cleanup, so it lives exactly as long as
    the connection, including when the client leaves during registration.
    A connection replaced by the same device, or evicted for a newer one, is
    kicked with a DISCONNECT (a transport close would make the two clients of
    one device kick each other forever).

    When the registry cannot answer, the connection is accepted anyway (fail
    open: clients stay served through a Redis outage) and ``health`` remembers
    that the registry must be reconciled with the live connections later.
    """

    log = Logger()

    def __init__(
        self,
        registry: Registry,
        kicker: Kicker,
        local: LocalKicker,
        server_id: str,
        clock: IReactorTime,
        max_devices: int,
        policy: DeviceLimitPolicy,
        health: BackendHealth,
    ) -> None:
        self._registry = registry
        self._kicker = kicker
        self._local = local
        self._server_id = server_id
        self._clock = clock
        self._max_devices = max_devices
        self._policy = policy
        self._health = health

    async def __call__(self, socket: Socket) -> None:
        identity = identity_of(socket)
        now = int(self._clock.seconds() * 1000)
        entry = Entry(
            socket_id=socket.id,
            user_id=identity.user_id,
            tenant_id=identity.tenant_id,
            device_id=identity.device_id,
            server_id=self._server_id,
            connected_at=now,
            last_activity=now,
        )
        self._local.pending.add(socket.id)
        try:
            result = await self._registry.register(entry, self._max_devices, self._policy)
        except (RegistryUnavailable, Fenced) as e:
            self._health.failed("register", e)
            result = None
        finally:
            self._local.pending.discard(socket.id)
        if result is not None:
            self._health.succeeded()
            if not result.accepted:
                self.log.info(
                    "socket {socket_id} refused: device limit {limit} reached",
                    socket_id=socket.id,
                    limit=self._max_devices,
                    event="device_limit",
                    **socket.tags,
                )
                raise ConnectionRefused(
                    "Device limit reached",
                    {"code": "device_limit", "maxDevices": self._max_devices},
                )
        socket.data[ENTRY] = entry
        self._local.registered[socket.id] = socket
        socket.add_cleanup(lambda: self._release(entry))
        if result is not None:
            if result.replaced is not None:
                self._kicker.kick(result.replaced, "replaced")
            for evicted in result.evicted:
                self._kicker.kick(evicted, "evicted")

    async def _release(self, entry: Entry) -> None:
        self._local.registered.pop(entry.socket_id, None)
        if self._local.releasing_all:
            return
        try:
            await self._registry.unregister(entry)
        except RegistryUnavailable as e:
            self._health.failed("unregister", e)
        else:
            self._health.succeeded()
