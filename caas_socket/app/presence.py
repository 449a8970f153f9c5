"""Presence: who of a tenant is online, per user and per device.

A user is online while at least one device is connected anywhere in the
cluster.  Going offline waits ``grace`` seconds after the last device left:
the check is *scheduled* (in the store, so any node may run it, even if the
node that scheduled it stopped or died) and evaluated against the registry
when due, so a reconnect flap emits nothing.  Every change carries a
per-user version that only grows (``max(previous + 1, now in ms)``, which
survives a store that restarted empty), and is published in order.

Clients of a tenant may ask for, and subscribe to, the presence of users of
their own tenant:

``presence:get`` ``{"userIds": [...]}``
    acked with ``[{"userId", "status", "devices", "version"}, ...]``.
``presence:subscribe`` / ``presence:unsubscribe`` ``{"userIds": [...]}``
    acked with ``{"subscribed": n}`` or ``{"error": code}``; changes then
    arrive as ``presence`` events ``{"userId", "deviceId", "status",
    "version"}`` (``deviceId`` is ``null`` for the user as a whole).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..naming import escape
from ..registry.health import BackendHealth
from ..registry.interfaces import Entry, RegistryUnavailable
from ..server import Namespace, Socket
from ..timers import TimerWheel
from .identity import identity_of

__all__ = [
    "MemoryPresenceStore",
    "Presence",
    "PresenceChange",
    "PresenceState",
    "PresenceStore",
    "presence_room",
]

MAX_QUERY = 100
_SUBSCRIPTIONS = "caas.presence"


def presence_room(tenant_id: str, user_id: str) -> str:
    """The room of the sockets subscribed to one user's presence."""
    return f"presence:{escape(tenant_id)}:{escape(user_id)}"


@attrs.frozen
class PresenceChange:
    """One published change; ``device_id`` is ``None`` for the user as a whole."""

    tenant_id: str
    user_id: str
    device_id: str | None
    status: str
    version: int
    at: int

    def to_client(self) -> dict[str, Any]:
        return {
            "userId": self.user_id,
            "deviceId": self.device_id,
            "status": self.status,
            "version": self.version,
        }


@attrs.frozen
class PresenceState:
    user_id: str
    status: str
    devices: tuple[str, ...]
    version: int

    def to_client(self) -> dict[str, Any]:
        return {
            "userId": self.user_id,
            "status": self.status,
            "devices": list(self.devices),
            "version": self.version,
        }


class PresenceStore(Protocol):
    """Where presence state lives; changes are published by the store."""

    async def device_online(self, tenant_id: str, user_id: str, device_id: str) -> None: ...

    async def schedule_checks(self, users: Sequence[tuple[str, str]], delay: float) -> None:
        """Check each ``(tenant, user)`` once ``delay`` has passed."""

    async def run_due_checks(self) -> None: ...

    async def get(self, tenant_id: str, user_ids: Sequence[str]) -> list[PresenceState]: ...


def next_version(previous: int, now_ms: int) -> int:
    """Grows on every change, and keeps growing across a store that lost its state."""
    return max(previous + 1, now_ms)


@attrs.define
class _UserPresence:
    status: str = "offline"
    version: int = 0
    devices: set[str] = attrs.Factory(set)


class MemoryPresenceStore:
    """Presence of a single node, evaluated against its in-memory registry."""

    def __init__(
        self,
        clock: IReactorTime,
        wheel: TimerWheel,
        devices_of: Callable[[str, str], Iterable[str]],
        publish: Callable[[PresenceChange], None],
    ) -> None:
        self._clock = clock
        self._wheel = wheel
        self._devices_of = devices_of
        self._publish = publish
        self._users: dict[tuple[str, str], _UserPresence] = {}

    def _change(self, key: tuple[str, str], device: str | None, status: str) -> None:
        state = self._users.setdefault(key, _UserPresence())
        now = int(self._clock.seconds() * 1000)
        state.version = next_version(state.version, now)
        self._publish(PresenceChange(key[0], key[1], device, status, state.version, now))

    async def device_online(self, tenant_id: str, user_id: str, device_id: str) -> None:
        key = (tenant_id, user_id)
        state = self._users.setdefault(key, _UserPresence())
        if state.status != "online":
            state.status = "online"
            self._change(key, None, "online")
        if device_id not in state.devices:
            state.devices.add(device_id)
            self._change(key, device_id, "online")

    async def schedule_checks(self, users: Sequence[tuple[str, str]], delay: float) -> None:
        for key in users:
            self._wheel.call_later(delay, self._check, key)

    async def run_due_checks(self) -> None:
        """Checks run on their own timers here."""

    def _check(self, key: tuple[str, str]) -> None:
        state = self._users.get(key)
        if state is None:
            return
        present = set(self._devices_of(*key))
        for device in sorted(state.devices - present):
            state.devices.discard(device)
            self._change(key, device, "offline")
        if not present and state.status == "online":
            state.status = "offline"
            self._change(key, None, "offline")

    async def get(self, tenant_id: str, user_ids: Sequence[str]) -> list[PresenceState]:
        result = []
        for user_id in user_ids:
            state = self._users.get((tenant_id, user_id), _UserPresence())
            result.append(
                PresenceState(user_id, state.status, tuple(sorted(state.devices)), state.version)
            )
        return result


class Presence:
    """The presence feature on the main namespace."""

    log = Logger()

    def __init__(
        self,
        nsp: Namespace,
        store: PresenceStore,
        *,
        grace: float,
        max_subscriptions: int,
        health: BackendHealth | None = None,
    ) -> None:
        self._nsp = nsp
        self.store = store
        self.grace = grace
        self.max_subscriptions = max_subscriptions
        self.published = 0
        self._clock = nsp.server.clock
        self._due: set[tuple[str, str]] = set()
        self._health = health or BackendHealth(self._clock, "presence")
        #: Changes that could not be written (store down): redone by resync().
        self._missed_online: set[tuple[str, str, str]] = set()
        self._missed_checks: set[tuple[str, str]] = set()
        #: Told about every change delivered here (metrics).
        self.on_change: Callable[[PresenceChange], None] | None = None
        nsp.on_connect(self._online)
        nsp.on_disconnect(self._left)
        nsp.on("presence:get", self._get)
        nsp.on("presence:subscribe", self._subscribe)
        nsp.on("presence:unsubscribe", self._unsubscribe)

    # -- changes ---------------------------------------------------------------

    def deliver(self, change: PresenceChange) -> None:
        """A published change: tell the local subscribers."""
        self.published += 1
        if self.on_change is not None:
            self.on_change(change)
        room = presence_room(change.tenant_id, change.user_id)
        self._nsp.to(room).emit("presence", change.to_client())

    def _online(self, socket: Socket) -> None:
        identity = identity_of(socket)
        self._device_online((identity.tenant_id, identity.user_id, identity.device_id))

    def _device_online(self, device: tuple[str, str, str]) -> None:
        self._background(
            self.store.device_online(*device),
            "presence update",
            lambda: self._missed_online.add(device),
        )

    def _left(self, socket: Socket, reason: str) -> None:
        identity = identity_of(socket)
        self.check_later([(identity.tenant_id, identity.user_id)])

    def entries_gone(self, entries: Iterable[Entry]) -> None:
        """Entries removed without their sockets (a reaped node): check their users."""
        self.check_later({(e.tenant_id, e.user_id) for e in entries})

    def check_later(self, users: Iterable[tuple[str, str]]) -> None:
        """Schedule offline checks; those of one reactor turn go to the store together.

        A drain or a network blip ends thousands of connections at once: one
        store call for all of them, not one each.
        """
        if not self._due:
            self._clock.callLater(0, self._flush_checks)
        self._due.update(users)

    def _flush_checks(self) -> None:
        users, self._due = sorted(self._due), set()
        if users:
            self._background(
                self.store.schedule_checks(users, self.grace),
                "presence check",
                lambda: self._missed_checks.update(users),
            )

    async def run_due_checks(self) -> None:
        try:
            await self.store.run_due_checks()
        except RegistryUnavailable as e:
            self._health.failed("presence checks", e)
        else:
            self._health.succeeded()

    def resync(self, live: list[Entry], ghosts: list[Entry], lost_state: bool) -> None:
        """After the store was unreachable or lost its state, make presence true again.

        Changes that failed meanwhile are redone, and the users of connections
        that ended unseen are checked; after a store that restarted empty,
        every live device is announced again (with a newer version).
        """
        devices = set(self._missed_online)
        self._missed_online.clear()
        if lost_state:
            devices.update((e.tenant_id, e.user_id, e.device_id) for e in live)
        for device in sorted(devices):
            self._device_online(device)
        users = self._missed_checks | {(e.tenant_id, e.user_id) for e in ghosts}
        self._missed_checks = set()
        if users:
            self.check_later(users)

    def _background(self, coro: Any, what: str, missed: Callable[[], None]) -> None:
        def failed(failure: Failure) -> None:
            if failure.check(RegistryUnavailable):
                self._health.failed(what, failure.value)
                missed()
            else:
                self.log.failure("{what} failed", failure, what=what)

        Deferred.fromCoroutine(coro).addCallbacks(lambda _: self._health.succeeded(), failed)

    # -- client requests -------------------------------------------------------

    @staticmethod
    def _user_ids(data: Any) -> list[str] | None:
        ids = data.get("userIds") if isinstance(data, dict) else None
        if not isinstance(ids, list) or not ids or len(ids) > MAX_QUERY:
            return None
        if not all(isinstance(u, str) and 0 < len(u) <= 256 for u in ids):
            return None
        return list(dict.fromkeys(ids))

    async def _get(self, socket: Socket, data: Any = None, *_: Any) -> Any:
        user_ids = self._user_ids(data)
        if user_ids is None:
            return {"error": "invalid_user_ids"}
        try:
            states = await self.store.get(identity_of(socket).tenant_id, user_ids)
        except Exception:
            self.log.failure("presence query failed")
            return {"error": "unavailable"}
        return [state.to_client() for state in states]

    def _subscribe(self, socket: Socket, data: Any = None, *_: Any) -> Any:
        user_ids = self._user_ids(data)
        if user_ids is None:
            return {"error": "invalid_user_ids"}
        subscribed: set[str] = socket.data.setdefault(_SUBSCRIPTIONS, set())
        if len(subscribed | set(user_ids)) > self.max_subscriptions:
            return {"error": "too_many_subscriptions", "max": self.max_subscriptions}
        tenant_id = identity_of(socket).tenant_id
        for user_id in user_ids:
            subscribed.add(user_id)
            socket.join(presence_room(tenant_id, user_id))
        return {"subscribed": len(subscribed)}

    def _unsubscribe(self, socket: Socket, data: Any = None, *_: Any) -> Any:
        user_ids = self._user_ids(data)
        if user_ids is None:
            return {"error": "invalid_user_ids"}
        subscribed: set[str] = socket.data.setdefault(_SUBSCRIPTIONS, set())
        tenant_id = identity_of(socket).tenant_id
        for user_id in user_ids:
            subscribed.discard(user_id)
            socket.leave(presence_room(tenant_id, user_id))
        return {"subscribed": len(subscribed)}
