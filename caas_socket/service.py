"""The service tree of one node, and the order in which it stops."""

from __future__ import annotations

from typing import Any

import txaio
from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.logger import Logger, globalLogPublisher
from twisted.python.failure import Failure

from .api import ApiKeys, build_api_site, load_openapi
from .app import CaasApp
from .app.activity import ActivityTracker
from .app.commands import Command, CommandError, decode_command
from .app.devices import LocalKicker
from .app.expiry import TokenExpiry
from .app.operations import LocalApplier, Operations, join_user_rooms
from .app.presence import Presence
from .auth import build_verifier
from .backends import build_backend
from .cluster.lifecycle import NodeLifecycle
from .config import Config
from .drain import Drainer
from .listeners import Listener
from .observability import Metrics, MetricsObserver, ServiceView, build_health_site
from .periodic import PeriodicService
from .registry.interfaces import DeviceLimitPolicy, RegistryUnavailable
from .server import Settings, SocketServer
from .transport.ratelimit import ConnectRateLimiter
from .transport.websocket import EngineWebSocketFactory

__all__ = ["CaasService", "build_service", "settings_from"]

#: How often due presence checks run (offline announcements come this late at most).
PRESENCE_SWEEP_INTERVAL = 1.0

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
    """One caas-socket node: listeners, the Socket.IO server, the CaaS features, the backend."""

    log = Logger()

    def __init__(self, config: Config, reactor: Any) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.socket_server = server = SocketServer(reactor, settings_from(config))
        self.local = LocalKicker()
        self.backend = backend = build_backend(config, reactor, server, self.local)
        self.registry = backend.registry
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
            server,
            verifier=verifier,
            registry=self.registry,
            server_id=config.server_id,
            clock=reactor,
            max_devices=config.max_devices,
            policy=DeviceLimitPolicy(config.device_limit_policy),
            local_kicker=self.local,
            delivery=backend.delivery,
            kicker=backend.kicker,
            health=backend.health,
        )
        TokenExpiry(
            reactor,
            server.wheel,
            verifier,
            leeway=config.jwt_leeway,
            refresh_event=config.token_refresh_event,
            lead=config.token_refresh_lead,
        ).install(server.main)
        assert backend.user_rooms is not None and backend.presence_store is not None
        self.user_rooms = backend.user_rooms
        server.main.use(join_user_rooms(self.user_rooms, backend.health))
        self.presence = Presence(
            server.main,
            # late bound: self.presence is being built
            backend.presence_store(lambda change: self.presence.deliver(change)),  # noqa: PLW0108
            grace=config.presence_grace,
            max_subscriptions=config.max_presence_subscriptions,
            health=backend.health,
        )
        self.applier = LocalApplier(server.main, self.local, self.user_rooms)
        if backend.subscribe_commands is not None:
            backend.subscribe_commands(self._command_received)
        self.operations = Operations(
            self.registry,
            self.presence.store,
            self.user_rooms,
            backend.publish_command or self.applier.apply,
        )
        self.activity = ActivityTracker(
            reactor,
            self.registry,
            self.local,
            backend.health,
            server_id=config.server_id,
            idle_timeout=config.idle_timeout,
            flush_interval=config.activity_flush_interval,
            ask_owner=backend.ask_owner,
        )
        if backend.dispatcher is not None:
            backend.dispatcher.activity = self.activity
        self.lifecycle = NodeLifecycle(
            reactor,
            self.registry,
            self.local,
            backend.health,
            server_id=config.server_id,
            ttl=config.lease_ttl,
            on_reaped=self.presence.entries_gone,
            kicker=self.app.kicker,
        )
        self.lifecycle.on_reconciled = self.presence.resync
        self.drainer = Drainer(reactor, server, config.drain_period)
        self.metrics = Metrics()
        self.metrics.watch(ServiceView(self))
        self.metrics_observer = MetricsObserver(self.metrics)
        self.presence.on_change = lambda change: self.metrics.presence.labels(change.status).inc()
        for kind, connection in backend.redis_connections.items():
            connection.observer = self.metrics.redis_observer(kind)
        site = build_health_site(self.readiness, self.metrics, reactor=reactor)
        self.health_listeners = [
            Listener(reactor, endpoint, site, "health") for endpoint in config.health_listen
        ]
        self.api_listeners: list[Listener] = []
        if config.api_listen:
            assert config.api_key_file is not None  # Config requires it with --api-listen
            api_site = build_api_site(
                self.operations,
                ApiKeys.from_file(config.api_key_file),
                reactor=reactor,
                openapi=load_openapi(),
            )
            self.api_listeners = [
                Listener(reactor, endpoint, api_site, "api") for endpoint in config.api_listen
            ]
        self.factory = EngineWebSocketFactory(
            server,
            reactor,
            trusted_proxies=config.trusted_proxies,
            max_outbound_buffer=config.max_outbound_buffer,
            limiter=ConnectRateLimiter(
                reactor, config.connect_rate_per_ip, config.connect_burst_per_ip
            )
            if config.connect_rate_per_ip
            else None,
            compression=config.websocket_compression,
        )
        self.listeners = [
            Listener(reactor, endpoint, self.factory, "socket.io") for endpoint in config.listen
        ]
        self.periodic = [
            PeriodicService(
                reactor,
                config.activity_flush_interval,
                self.activity.flush,
                "activity flush",
                now=False,
            ),
            PeriodicService(
                reactor, config.sweep_interval, self.activity.sweep, "idle sweep", now=False
            ),
            PeriodicService(
                reactor, PRESENCE_SWEEP_INTERVAL, self.presence.run_due_checks, "presence checks"
            ),
        ]
        for service in [
            *self.health_listeners,
            *backend.services,
            self.lifecycle,
            *self.periodic,
            *self.listeners,
            *self.api_listeners,
        ]:
            service.setServiceParent(self)

    def _command_received(self, payload: bytes) -> None:
        """A command from the cluster (the HTTP API of some node, or a service)."""
        try:
            command = decode_command(payload)
        except CommandError as e:
            self.log.warn(
                "command refused: {code} ({message})",
                code=e.code,
                message=e.message,
                event="command_refused",
            )
            return
        Deferred.fromCoroutine(self.applier.apply(command)).addErrback(
            self._command_failed, command
        )

    def _command_failed(self, failure: Failure, command: Command) -> None:
        if failure.check(CommandError):
            error: CommandError = failure.value  # type: ignore[assignment]
            self.log.warn(
                "command {op} refused: {code} ({message})",
                op=command.op,
                code=error.code,
                message=error.message,
                event="command_refused",
            )
        elif failure.check(RegistryUnavailable):
            self.backend.health.failed(f"command {command.op}", failure.value)
        else:
            self.log.failure("command {op} failed", failure, op=command.op)

    # -- state -----------------------------------------------------------------

    @property
    def draining(self) -> bool:
        return self.drainer.draining

    @property
    def drain_remaining(self) -> int:
        return self.drainer.remaining

    def readiness(self) -> dict[str, bool]:
        """Each condition of readiness; the node is ready when all hold."""
        return {
            "accepting": self.factory.accepting and not self.drainer.draining,
            "lease": self.lifecycle.leased,
            "registry": self.backend.health.available,
            "bus": self.backend.hears_cluster(),
        }

    @property
    def ready(self) -> bool:
        """Whether a load balancer should send clients here."""
        return all(self.readiness().values())

    # -- start and stop --------------------------------------------------------

    def startService(self) -> None:
        globalLogPublisher.addObserver(self.metrics_observer)
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

    def stopService(self) -> Deferred[None]:
        """Drain, then stop; twistd waits for the returned Deferred."""
        self.drainer.draining = True  # /readyz turns red before anything else happens
        self.factory.accepting = False
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        self.log.info(
            "node {server_id} draining {count} connections over at most {period}s",
            server_id=self.config.server_id,
            count=len(self.socket_server.connections),
            period=self.config.drain_period,
            event="drain_started",
        )
        await _stop_all([*self.listeners, *self.api_listeners])
        self.local.releasing_all = True
        await self.drainer.drain()
        await _stop_all(self.periodic)
        await maybeDeferred(self.lifecycle.stopService)
        await self.lifecycle.release()
        await _stop_all(self.backend.services)
        if self.backend.close is not None:
            await self.backend.close()
        self.socket_server.wheel.stop()
        # Last: until now /readyz said 503 and /metrics showed the drain.
        await _stop_all(self.health_listeners)
        globalLogPublisher.removeObserver(self.metrics_observer)
        self.running = False
        self.log.info(
            "node {server_id} stopped", server_id=self.config.server_id, event="node_stopped"
        )


async def _stop_all(services: list[Any]) -> None:
    await DeferredList([maybeDeferred(service.stopService) for service in services])


def build_service(config: Config, reactor: Any) -> IService:
    """The service of one node; ``reactor`` is the only reactor it will use."""
    txaio.use_twisted()
    txaio.config.loop = reactor
    # Autobahn logs every frame at debug level; twistd's observer would print it all.
    txaio.set_global_log_level("info")
    return CaasService(config, reactor)
