"""The service tree of one node, and the order in which it stops."""

from __future__ import annotations

from typing import Any

import txaio
from twisted.application.service import IService, MultiService
from twisted.internet.defer import DeferredList, maybeDeferred
from twisted.logger import Logger

from .app import CaasApp
from .app.devices import LocalKicker
from .auth import build_verifier
from .backends import build_backend
from .cluster.lifecycle import NodeLifecycle
from .config import Config
from .listeners import Listener
from .registry.interfaces import DeviceLimitPolicy
from .server import Settings, SocketServer
from .transport.websocket import EngineWebSocketFactory

__all__ = ["CaasService", "build_service", "settings_from"]

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
    """One caas-socket node: listeners, the Socket.IO server, the CaaS app, its backend."""

    log = Logger()

    def __init__(self, config: Config, reactor: Any) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.socket_server = SocketServer(reactor, settings_from(config))
        self.local = LocalKicker()
        self.backend = build_backend(config, reactor, self.socket_server, self.local)
        self.registry = self.backend.registry
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
            local_kicker=self.local,
            delivery=self.backend.delivery,
            kicker=self.backend.kicker,
            health=self.backend.health,
        )
        self.lifecycle = NodeLifecycle(
            reactor,
            self.registry,
            self.local,
            self.backend.health,
            server_id=config.server_id,
            ttl=config.lease_ttl,
        )
        self.factory = EngineWebSocketFactory(self.socket_server, reactor)
        self.listeners = [
            Listener(reactor, endpoint, self.factory, "socket.io") for endpoint in config.listen
        ]
        for service in [*self.backend.services, self.lifecycle, *self.listeners]:
            service.setServiceParent(self)

    def readiness(self) -> dict[str, bool]:
        """Each condition of readiness; the node is ready when all hold."""
        return {
            "accepting": self.factory.accepting,
            "lease": self.lifecycle.leased,
            "registry": self.backend.health.available,
            "bus": self.backend.hears_cluster(),
        }

    @property
    def ready(self) -> bool:
        """Whether a load balancer should send clients here."""
        return all(self.readiness().values())

    def startService(self) -> None:
        super().startService()
        self.log.info(
            "node {server_id} started (auth {auth}, registry {registry})",
            server_id=self.config.server_id,
            auth=self.config.auth,
            registry=self.backend.name,
            event="node_started",
        )
        if self.config.auth == "none":
            bound = [lst.port.getHost() for lst in self.listeners if lst.port is not None]
            address = f"{bound[0].host}:{bound[0].port}" if bound else "127.0.0.1:8080"
            self.log.warn(_DEV_BANNER, address=address)

    def stopService(self) -> Any:
        """Stop in order: listeners, connections, the lease, then the backend."""
        from twisted.internet.defer import Deferred

        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        self.factory.accepting = False
        await DeferredList([maybeDeferred(lst.stopService) for lst in self.listeners])
        self.socket_server.close_all("server shutting down")
        await maybeDeferred(self.lifecycle.stopService)
        await self.lifecycle.release()
        await DeferredList([maybeDeferred(s.stopService) for s in self.backend.services])
        if self.backend.close is not None:
            await self.backend.close()
        self.socket_server.wheel.stop()
        self.running = False
        self.log.info("node {server_id} stopped", server_id=self.config.server_id)


def build_service(config: Config, reactor: Any) -> IService:
    """The service of one node; ``reactor`` is the only reactor it will use."""
    txaio.use_twisted()
    txaio.config.loop = reactor
    # Autobahn logs every frame at debug level; twistd's observer would print it all.
    txaio.set_global_log_level("info")
    return CaasService(config, reactor)
