"""Wires the CaaS behaviour onto a :class:`~caas_socket.server.SocketServer`."""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime

from ..auth import TokenVerifier
from ..naming import user_room
from ..registry.health import BackendHealth
from ..registry.interfaces import DeviceLimitPolicy, Registry
from ..server import Socket, SocketServer
from ..server.socket import new_id
from .delivery import LocalDelivery, UserDelivery
from .devices import Kicker, LocalKicker, RegisterDevice
from .identity import Authenticate, identity_of

__all__ = ["CaasApp"]


class CaasApp:
    """Authentication, device registry, heartbeat and sync on the main namespace.

    ``delivery`` and ``kicker`` default to this node only; cluster mode passes
    versions that also reach the other nodes.
    """

    def __init__(
        self,
        server: SocketServer,
        *,
        verifier: TokenVerifier,
        registry: Registry,
        server_id: str,
        clock: IReactorTime,
        max_devices: int,
        policy: DeviceLimitPolicy,
        local_kicker: LocalKicker | None = None,
        delivery: UserDelivery | None = None,
        kicker: Kicker | None = None,
        health: BackendHealth | None = None,
    ) -> None:
        self.server = server
        self.clock = clock
        self.registry = registry
        self.health = health or BackendHealth(clock, "registry")
        self.local_kicker = local_kicker or LocalKicker()
        self.kicker = kicker or self.local_kicker
        self.delivery = delivery or LocalDelivery(server.main)
        nsp = server.main
        nsp.use(Authenticate(verifier, new_id))
        nsp.use(
            RegisterDevice(
                registry,
                self.kicker,
                self.local_kicker,
                server_id,
                clock,
                max_devices,
                policy,
                self.health,
            )
        )
        nsp.on_connect(self._joined)
        nsp.on("heartbeat", self._heartbeat)
        nsp.on("sync", self._sync)

    def _joined(self, socket: Socket) -> None:
        identity = identity_of(socket)
        socket.join(user_room(identity.tenant_id, identity.user_id))

    def _heartbeat(self, socket: Socket, *_: Any) -> None:
        socket.emit("heartbeat", {"serverTime": int(self.clock.seconds() * 1000)})

    def _sync(self, socket: Socket, data: Any = None, *_: Any) -> None:
        identity = identity_of(socket)
        self.delivery.sync_to_user_devices(
            identity.tenant_id, identity.user_id, "sync", data, except_socket=socket.id
        )
