"""Reaching devices and sockets that live on other nodes.

Delivery to a user is encoded once: the local devices get the frames directly,
and one script call looks up which other nodes hold the user's devices and
publishes the same encoded frame to each of them, in one round trip.  The
deliveries of one reactor turn share that call, and each node receives them
in one message: under load, the cost per delivery falls instead of rising.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ..app.activity import ActivityTracker
from ..app.devices import LocalKicker
from ..naming import user_room
from ..protocol import socketio
from ..redis_connection import LuaScript
from ..registry.interfaces import Entry
from ..registry.redis import user_key
from ..server import SocketServer
from ..server.frames import encode_frames
from . import messages
from .bus import Bus

__all__ = ["BusDispatcher", "ClusterDelivery", "ClusterKicker"]

#: Deliveries published by one script call at most.
_BATCH = 200

PUBLISH_TO_USER_NODES = LuaScript(
    "publish_to_user_nodes",
    resources.files("caas_socket.cluster").joinpath("lua/publish_to_user_nodes.lua").read_bytes(),
)


class ClusterDelivery:
    """``sync_to_user_devices`` across the cluster."""

    log = Logger()

    def __init__(self, server: SocketServer, bus: Bus, *, prefix: str, server_id: str) -> None:
        self._nsp = server.main
        self._clock = server.clock
        self._bus = bus
        self._prefix = prefix
        self._server_id = server_id.encode()
        self._channel_prefix = f"{prefix}bus:".encode()
        #: (user key, message) of this reactor turn, published together at its end.
        self._queued: list[bytes] = []
        self.published = 0

    def sync_to_user_devices(
        self,
        tenant_id: str,
        user_id: str,
        event: str,
        data: Any,
        except_socket: str | None = None,
    ) -> None:
        room = user_room(tenant_id, user_id)
        excluded = (except_socket,) if except_socket is not None else ()
        frames = encode_frames(socketio.Packet(socketio.EVENT, self._nsp.name, [event, data]))
        self._nsp.adapter.deliver(frames, (room,), excluded)
        payload = messages.encode(
            messages.Emit(self._nsp.name, (room,), excluded, frames[0], tuple(frames[1:]))
        )
        key = (self._prefix + user_key(tenant_id, user_id)).encode("utf-8", "surrogatepass")
        if not self._queued:
            self._clock.callLater(0, self._flush)
        self._queued += (key, payload)

    def _flush(self) -> None:
        queued, self._queued = self._queued, []
        for start in range(0, len(queued), 2 * _BATCH):
            batch = queued[start : start + 2 * _BATCH]
            Deferred.fromCoroutine(self._publish(batch))

    async def _publish(self, batch: list[bytes]) -> None:
        try:
            await self._bus.run_script(
                PUBLISH_TO_USER_NODES, (self._server_id, self._channel_prefix, *batch)
            )
        except Exception as e:
            self._bus.health.failed("publish to user nodes", e)
            return
        self._bus.health.succeeded()
        self.published += len(batch) // 2


class ClusterKicker:
    """Kicks a connection on this node directly, on another through the bus."""

    def __init__(self, local: LocalKicker, bus: Bus, server_id: str) -> None:
        self._local = local
        self._bus = bus
        self._server_id = server_id

    def kick(self, entry: Entry, reason: str) -> None:
        if entry.server_id == self._server_id:
            self._local.kick(entry, reason)
            return
        message = messages.Close(entry.socket_id, reason, reconnect=False)
        Deferred.fromCoroutine(self._bus.publish(entry.server_id, message))

    def ask_idle(self, entry: Entry, before: int) -> None:
        """Report a stale entry to the node that owns it."""
        Deferred.fromCoroutine(self._bus.publish(entry.server_id, messages.Idle(entry, before)))


class BusDispatcher:
    """Acts on the messages other nodes send to this one."""

    log = Logger()

    def __init__(
        self, server: SocketServer, local: LocalKicker, activity: ActivityTracker | None = None
    ) -> None:
        self._server = server
        self._local = local
        #: Set once the node's activity tracker exists (it needs the registry first).
        self.activity = activity

    def __call__(self, message: messages.Message) -> None:
        if isinstance(message, messages.Emit):
            nsp = self._server.namespaces.get(message.nsp)
            if nsp is not None:
                nsp.adapter.deliver(message.frames, message.rooms, message.except_rooms)
        elif isinstance(message, messages.Close):
            socket = self._local.registered.get(message.socket_id)
            if socket is None:
                return
            if message.reconnect:
                socket.close_connection("forced close")
            else:
                self._local.kick_socket(socket, message.reason)
        elif isinstance(message, messages.Idle) and self.activity is not None:
            Deferred.fromCoroutine(self._check_idle(self.activity, message))

    async def _check_idle(self, activity: ActivityTracker, message: messages.Idle) -> None:
        try:
            await activity.check_idle(message.entry, message.before)
        except Exception:
            self.log.failure("idle check of {socket_id} failed", socket_id=message.entry.socket_id)
