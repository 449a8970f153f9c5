"""caas-socket nodes in this process, each with the API on its own port.

What ``twistd caas-socket --api-listen tcp:0 --api-key-file F`` runs, built by
hand (:class:`CaasService` plus a :class:`Listener` labelled ``api``) so the
end-to-end tests need no subprocess and share the test's reactor.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

from twisted.internet import reactor

from caas_socket.api import ApiKeys, build_api_site, load_openapi
from caas_socket.config import Config
from caas_socket.listeners import Listener
from caas_socket.service import CaasService, build_service
from tests.api.client import LOCAL, ApiClient, sleep
from tests.interop.conftest import SECRET
from tests.support.redis_server import RedisServer


class ApiNode:
    """One caas-socket node in this process, with the API on its own port.

    This is what ``twistd caas-socket --api-listen tcp:0 --api-key-file F``
    runs, built by hand until service.py wires the options.
    """

    def __init__(self, server_id: str, redis: RedisServer, keys_file: Path, **config: Any) -> None:
        settings: dict[str, Any] = {
            "listen": LOCAL,
            "health_listen": LOCAL,
            "redis": redis.url,
            "server_id": server_id,
            "jwt_secret": SECRET,
            "lease_ttl": 2.0,
            "presence_grace": 1.0,
            "drain_period": 0.3,
            "redis_timeout": 0.5,
        }
        settings.update(config)
        self.server_id = server_id
        self.service = cast(CaasService, build_service(Config.default(**settings), reactor))
        site = build_api_site(
            self.service.operations,
            ApiKeys.from_file(str(keys_file)),
            reactor=reactor,
            openapi=load_openapi(),
        )
        self.api_listener = Listener(reactor, LOCAL, site, "api")
        self.api = ApiClient("")

    async def start(self, timeout: float = 10.0) -> ApiNode:
        self.service.startService()
        self.api_listener.startService()
        assert self.api_listener.port is not None
        self.api = ApiClient(f"http://127.0.0.1:{self.api_listener.port.getHost().port}")
        deadline = time.monotonic() + timeout
        while not self.service.ready:
            if time.monotonic() > deadline:
                raise TimeoutError(f"node {self.server_id} not ready: {self.service.readiness()}")
            await sleep(0.05)
        return self

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:port`` of its Socket.IO listener."""
        port = self.service.listeners[0].port
        assert port is not None
        return f"ws://127.0.0.1:{port.getHost().port}"

    async def stop(self) -> None:
        await self.api.close()
        await self.api_listener.stopService()
        if self.service.running:
            await self.service.stopService()


class ApiCluster:
    """The nodes of one test (all on one Redis) and the socket.io-client driver."""

    def __init__(self, redis: RedisServer, driver: Any, minter: Any, keys_file: Path) -> None:
        self.redis = redis
        self.sio = driver
        self.mint = minter
        self.keys_file = keys_file
        self.nodes: list[ApiNode] = []

    async def start(self, *server_ids: str, **config: Any) -> list[ApiNode]:
        nodes = [ApiNode(s, self.redis, self.keys_file, **config) for s in server_ids]
        self.nodes += nodes
        for node in nodes:
            await node.start()
        return nodes

    async def connected(
        self, client_id: str, node: ApiNode, user: str, device: str, tenant: str = "t1", **opts: Any
    ) -> str:
        """Connect like the apps do and wait for it; returns the socket id."""
        auth = {"token": self.mint(user, tenant)}
        event = await self.sio.connected(
            client_id, node.url, auth=auth, query={"deviceId": device}, **opts
        )
        return str(event["sid"])

    async def stop(self) -> None:
        for node in self.nodes:
            await node.stop()
