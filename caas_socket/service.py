"""The service tree of one node, and the order in which it stops."""

from __future__ import annotations

from typing import Any

import txaio
from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger

from .app import CaasApp
from .auth import build_verifier
from .config import Config
from .listeners import Listener
from .registry.interfaces import DeviceLimitPolicy, Registry
from .registry.memory import MemoryRegistry
from .server import Settings, SocketServer
from .transport.websocket import EngineWebSocketFactory

__all__ = ["CaasService", "build_service"]

#: How long a node's lease lives without renewal.
LEASE_TTL = 10.0

_DEV_BANNER = """
  ###########################################################################
  #  DEVELOPMENT MODE: --auth none                                          #
  #  Tokens are NOT verified: any client may claim to be any user.          #
  #  Never run this on a network you do not own.                            #
  ###########################################################################
  Connect with the official socket.io-client:
    io("ws://{address}", {{ transports: ["websocket"],
         auth: {{ token: "alice" }}, query: {{ deviceId: "laptop" }} }})
  (the token is taken as the user id; a JWT's claims are read unverified)
"""


def settings_from(config: Config) -> Settings:
    """The protocol settings a :class:`Config` asks for."""
    return Settings(
        ping_interval=config.ping_interval,
        ping_timeout=config.ping_timeout,
        connect_timeout=config.connect_timeout,
        max_payload=config.max_payload,
    )


class CaasService(MultiService):
    """One caas-socket node: listeners, the Socket.IO server and the CaaS app."""

    log = Logger()

    def __init__(self, config: Config, reactor: Any) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.socket_server = SocketServer(reactor, settings_from(config))
        self.registry: Registry = MemoryRegistry.standalone(reactor)
        verifier = build_verifier(
            mode=config.auth,
            secret=config.jwt_secret,
            public_key_file=config.jwt_public_key,
            jwks_file=config.jwt_jwks,
            algorithms=config.jwt_algorithms,
            issuer=config.jwt_issuer,
            audience=config.jwt_audience,
            leeway=config.jwt_leeway,
            user_claim=config.user_claim,
            tenant_claim=config.tenant_claim,
            now=reactor.seconds,
        )
        self.app = CaasApp(
            self.socket_server,
            verifier=verifier,
            registry=self.registry,
            server_id=config.server_id,
            clock=reactor,
            max_devices=config.max_devices,
            policy=DeviceLimitPolicy(config.device_limit_policy),
        )
        self.factory = EngineWebSocketFactory(self.socket_server, reactor)
        self.listeners = [
            Listener(reactor, endpoint, self.factory, "socket.io") for endpoint in config.listen
        ]
        for listener in self.listeners:
            listener.setServiceParent(self)

    def startService(self) -> None:
        super().startService()
        Deferred.fromCoroutine(self._started()).addErrback(
            lambda f: self.log.failure("node start-up failed", f)
        )

    async def _started(self) -> None:
        await self.registry.acquire_lease(self.config.server_id, LEASE_TTL)
        self.log.info(
            "node {server_id} started (auth {auth}, registry {registry})",
            server_id=self.config.server_id,
            auth=self.config.auth,
            registry="memory",
            event="node_started",
        )
        if self.config.auth == "none":
            address = next(
                (
                    f"{listener.port.getHost().host}:{listener.port.getHost().port}"
                    for listener in self.listeners
                    if listener.port is not None
                ),
                "127.0.0.1:8080",
            )
            self.log.warn(_DEV_BANNER, address=address)

    def stopService(self) -> Deferred[None]:
        """Stop in order: listeners, then connections, then the registry lease."""
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        self.factory.accepting = False
        await DeferredList([d for d in (_stop(lst) for lst in self.listeners) if d is not None])
        self.socket_server.close_all("server shutting down")
        await self.registry.release_lease()
        self.socket_server.wheel.stop()
        self.running = False
        self.log.info("node {server_id} stopped", server_id=self.config.server_id)


def _stop(service: IService) -> Deferred[None] | None:
    return service.stopService()  # type: ignore[no-any-return]


def build_service(config: Config, reactor: Any) -> IService:
    """The service of one node; ``reactor`` is the only reactor it will use."""
    txaio.use_twisted()
    txaio.config.loop = reactor
    # Autobahn logs every frame at debug level; twistd's observer would print it all.
    txaio.set_global_log_level("info")
    return CaasService(config, reactor)
