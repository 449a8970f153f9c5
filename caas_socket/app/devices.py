"""Device registration: one registry entry per live connection, within the limit."""

from __future__ import annotations

from typing import Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ..registry.interfaces import DeviceLimitPolicy, Entry, Registry
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
    """Kicks connections of this node, found through the sockets it registered."""

    log = Logger()

    def __init__(self) -> None:
        self.registered: dict[str, Socket] = {}

    def kick(self, entry: Entry, reason: str) -> None:
        socket = self.registered.get(entry.socket_id)
        if socket is None:
            return
        self.log.info(
            "kicking socket {socket_id}: {reason}",
            socket_id=entry.socket_id,
            reason=reason,
            event="kick",
            **socket.tags,
        )
        if socket.connected:
            socket.emit(KICKED_EVENT, {"reason": reason})
            socket.disconnect()
        else:
            socket.close_connection("forced close")


class RegisterDevice:
    """Middleware: register the device, enforcing the user's device limit.

    The entry is released by a socket cleanup, so it lives exactly as long as
    the connection, including when the client leaves during registration.
    A connection replaced by the same device, or evicted for a newer one, is
    kicked with a DISCONNECT (a transport close would make the two clients of
    one device kick each other forever).
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
    ) -> None:
        self._registry = registry
        self._kicker = kicker
        self._local = local
        self._server_id = server_id
        self._clock = clock
        self._max_devices = max_devices
        self._policy = policy

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
        result = await self._registry.register(entry, self._max_devices, self._policy)
        if not result.accepted:
            self.log.info(
                "socket {socket_id} refused: device limit {limit} reached",
                socket_id=socket.id,
                limit=self._max_devices,
                event="device_limit",
                **socket.tags,
            )
            raise ConnectionRefused(
                "Device limit reached", {"code": "device_limit", "maxDevices": self._max_devices}
            )
        socket.data[ENTRY] = entry
        self._local.registered[socket.id] = socket
        socket.add_cleanup(lambda: self._release(entry))
        if result.replaced is not None:
            self._kicker.kick(result.replaced, "replaced")
        for evicted in result.evicted:
            self._kicker.kick(evicted, "evicted")

    async def _release(self, entry: Entry) -> None:
        self._local.registered.pop(entry.socket_id, None)
        await self._registry.unregister(entry)
