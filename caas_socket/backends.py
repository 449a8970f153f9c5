"""The registry backends, chosen by name from one table.

``memory`` keeps everything in this process: one node, nothing to share.
``redis`` shares the registry and a pub/sub bus between nodes.  Both give the
service the same parts, so nothing else needs to know which one runs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from twisted.application.service import IService

from .app.commands import Command, encode_command
from .app.delivery import UserDelivery
from .app.devices import Kicker, LocalKicker
from .app.operations import MemoryUserRooms, UserRooms
from .app.presence import MemoryPresenceStore, PresenceChange, PresenceStore
from .config import Config
from .registry.health import BackendHealth
from .registry.interfaces import Entry, Registry
from .registry.memory import MemoryRegistry
from .server import SocketServer

__all__ = ["BACKENDS", "Backend", "backend_name", "build_backend"]


@attrs.define
class Backend:
    """What a backend contributes to a node."""

    name: str
    registry: Registry
    health: BackendHealth
    #: ``None``: this node alone (local delivery and kicks).
    delivery: UserDelivery | None = None
    kicker: Kicker | None = None
    #: Services to run (the bus), started with the node and stopped after the drain.
    services: list[IService] = attrs.Factory(list)
    #: Whether the node hears the cluster (always, for a single node).
    hears_cluster: Callable[[], bool] = lambda: True
    #: Closes connections to the backend at the very end of a stop.
    close: Callable[[], Any] | None = None
    #: Builds the presence store, given what to do with each published change.
    presence_store: Callable[[Callable[[PresenceChange], None]], PresenceStore] | None = None
    #: Reports a stale entry to the node that owns it (cluster only).
    ask_owner: Callable[[Entry, int], None] | None = None
    #: Handles messages of other nodes (cluster only); told about the activity tracker.
    dispatcher: Any = None
    #: Redis connections by kind ("registry", "bus"), for latency metrics.
    redis_connections: dict[str, Any] = attrs.Factory(dict)
    #: Rooms users joined for all their connections.
    user_rooms: UserRooms | None = None
    #: Sends a command to every node; ``None``: apply it here, the only node.
    publish_command: Callable[[Command], Awaitable[None]] | None = None
    #: Registers the handler of commands arriving from the cluster (payload bytes).
    subscribe_commands: Callable[[Callable[[bytes], None]], None] | None = None


def _memory(config: Config, reactor: Any, server: SocketServer, local: LocalKicker) -> Backend:
    registry = MemoryRegistry.standalone(reactor)
    users = registry.store.users

    def presence_store(publish: Callable[[PresenceChange], None]) -> PresenceStore:
        return MemoryPresenceStore(
            reactor, server.wheel, lambda t, u: users.get((t, u), {}).keys(), publish
        )

    return Backend(
        "memory",
        registry,
        BackendHealth(reactor, "registry"),
        presence_store=presence_store,
        user_rooms=MemoryUserRooms(config.max_rooms_per_user),
    )


def _redis(config: Config, reactor: Any, server: SocketServer, local: LocalKicker) -> Backend:
    from .cluster.bus import Bus
    from .cluster.delivery import BusDispatcher, ClusterDelivery, ClusterKicker
    from .cluster.presence import RedisPresenceStore, decode_change
    from .cluster.rooms import RedisUserRooms
    from .redis_connection import RedisURL, open_pool
    from .registry.interfaces import RegistryUnavailable
    from .registry.redis import RedisRegistry

    assert config.redis is not None
    url = RedisURL.parse(config.redis)
    health = BackendHealth(reactor, "Redis")
    pool = open_pool(url, reactor, pool_size=4, timeout=config.redis_timeout)
    # One connection for the bus, so this node's messages keep their order.
    publisher = open_pool(url, reactor, pool_size=1, timeout=config.redis_timeout)
    registry = RedisRegistry(
        pool, reactor, prefix=config.redis_prefix, timeout=config.redis_timeout
    )
    dispatcher = BusDispatcher(server, local)
    bus = Bus(
        reactor,
        url,
        publisher,
        prefix=config.redis_prefix,
        server_id=config.server_id,
        handler=dispatcher,
        health=health,
    )
    kicker = ClusterKicker(local, bus, config.server_id)

    def presence_store(publish: Callable[[PresenceChange], None]) -> PresenceStore:
        store = RedisPresenceStore(
            pool, reactor, prefix=config.redis_prefix, timeout=config.redis_timeout
        )
        bus.extra_channels[store.channel] = lambda payload: publish(decode_change(payload))
        return store

    api_channel = f"{config.redis_prefix}api".encode()

    async def publish_command(command: Command) -> None:
        if not await bus.publish_raw(api_channel, encode_command(command)):
            raise RegistryUnavailable("Redis did not take the command")

    def subscribe_commands(handler: Callable[[bytes], None]) -> None:
        bus.extra_channels[api_channel] = handler

    async def close() -> None:
        await pool.disconnect()
        await publisher.disconnect()

    return Backend(
        "redis",
        registry,
        health,
        delivery=ClusterDelivery(
            server, bus, prefix=config.redis_prefix, server_id=config.server_id
        ),
        kicker=kicker,
        services=[bus],
        hears_cluster=lambda: bus.verified,
        close=close,
        presence_store=presence_store,
        ask_owner=kicker.ask_idle,
        dispatcher=dispatcher,
        redis_connections={"registry": pool, "bus": publisher},
        user_rooms=RedisUserRooms(
            pool,
            reactor,
            prefix=config.redis_prefix,
            timeout=config.redis_timeout,
            max_rooms=config.max_rooms_per_user,
        ),
        publish_command=publish_command,
        subscribe_commands=subscribe_commands,
    )


BACKENDS: dict[str, Callable[[Config, Any, SocketServer, LocalKicker], Backend]] = {
    "memory": _memory,
    "redis": _redis,
}


def backend_name(config: Config) -> str:
    """``redis`` when ``--redis`` is given, else ``memory``."""
    return "redis" if config.redis else "memory"


def build_backend(
    config: Config, reactor: Any, server: SocketServer, local: LocalKicker
) -> Backend:
    return BACKENDS[backend_name(config)](config, reactor, server, local)
