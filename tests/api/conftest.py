"""Fixtures of the HTTP API tests: a bounded HTTP client, a site over fake operations, real nodes.

* ``api``: :func:`build_api_site` over :class:`FakeOperations` on a free port
  of 127.0.0.1, with the keys of :data:`KEYS_TEXT` and a 1 KiB body limit;
  ``api.client`` calls it, ``api.ops`` records what it was asked to do.
* ``api_cluster``: caas-socket nodes *in this process*, on the test's reactor,
  sharing the module's real ``redis-server``, each with the API on its own
  port (as ``--api-listen tcp:0`` will give), and the official
  socket.io-client (``sio``) to connect to them.  Nodes stop at teardown.

Every HTTP call is bounded by :data:`TIMEOUT`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from caas_socket.api import ApiKeys, build_api_site, load_openapi
from caas_socket.app.commands import Command, CommandError
from caas_socket.app.presence import PresenceState
from caas_socket.config import Config
from caas_socket.listeners import Listener
from caas_socket.registry.interfaces import Entry
from caas_socket.service import CaasService, build_service
from tests.interop.conftest import (  # reused as they are: the client driver and tokens
    SECRET,
    mint,  # noqa: F401
    pytest_runtest_makereport,  # noqa: F401
    sio,  # noqa: F401
)
from tests.support.redis_server import RedisServer

TIMEOUT = 5.0
FULL_KEY = "full-access-key-0123456789abcdef"
T1_KEY = "tenant-t1-only-key-0123456789abc"
KEYS_TEXT = f"# keys of the API tests\n{FULL_KEY}\n{T1_KEY}   t1   # one tenant\n"
LOCAL = "tcp:0:interface=127.0.0.1"
_DEFAULT = object()


@attrs.frozen
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def code(self) -> str:
        """The error code of an error reply."""
        return str(self.json["error"]["code"])


@implementer(IBodyProducer)
class _Bytes:
    """A request body written at once; ``length=None`` sends it chunked."""

    def __init__(self, data: bytes, chunked: bool = False) -> None:
        self._data = data
        self.length = UNKNOWN_LENGTH if chunked else len(data)

    def startProducing(self, consumer: Any) -> Deferred[None]:
        consumer.write(self._data)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class _Body(Protocol):
    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if reason.check(ResponseDone):
            self.done.callback(b"".join(self.chunks))
        else:
            self.done.errback(reason)


class ApiClient:
    """Calls the API at ``base`` with a key (``key=None``: no Authorization header)."""

    def __init__(self, base: str, key: str | None = FULL_KEY) -> None:
        self.base = base
        self.key = key
        self._pool = HTTPConnectionPool(reactor, persistent=False)
        self._agent = Agent(reactor, pool=self._pool)

    async def request(
        self,
        method: str,
        path: str,
        body: Any = _DEFAULT,
        *,
        key: Any = _DEFAULT,
        raw: bytes | None = None,
        content_type: str | None = "application/json",
        chunked: bool = False,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """``body`` is sent as JSON; ``raw`` as is.  Bounded by :data:`TIMEOUT`."""
        sent = Headers()
        key = self.key if key is _DEFAULT else key
        if key is not None:
            sent.addRawHeader(b"authorization", f"Bearer {key}".encode())
        data = raw if raw is not None else None if body is _DEFAULT else json.dumps(body).encode()
        if data is not None and content_type is not None:
            sent.addRawHeader(b"content-type", content_type.encode())
        for name, value in (headers or {}).items():
            sent.addRawHeader(name.encode(), value.encode())
        producer = None if data is None else _Bytes(data, chunked)
        d = self._agent.request(method.encode(), (self.base + path).encode(), sent, producer)
        response = await d.addTimeout(TIMEOUT, reactor)
        collected = _Body()
        response.deliverBody(collected)
        content = await collected.done.addTimeout(TIMEOUT, reactor)
        names = {k.decode().lower(): v[-1].decode() for k, v in response.headers.getAllRawHeaders()}
        return Reply(response.code, names, content)

    async def get(self, path: str, **kwargs: Any) -> Reply:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, body: Any = _DEFAULT, **kwargs: Any) -> Reply:
        return await self.request("POST", path, body, **kwargs)

    async def close(self) -> None:
        await self._pool.closeCachedConnections()


class FakeOperations:
    """What the API asked for, recorded; rooms kept per user, with a limit of 3."""

    def __init__(self) -> None:
        self.sent: list[Command] = []
        self.rooms: dict[tuple[str, str], set[str]] = {}
        self.entries: dict[tuple[str, str], list[Entry]] = {}
        self.failure: Exception | None = None
        self.max_rooms = 3

    async def send(self, command: Command) -> None:
        if self.failure is not None:
            raise self.failure
        if command.op == "join" and command.device_id is None:
            assert command.user_id is not None
            rooms = self.rooms.setdefault((command.tenant_id, command.user_id), set())
            if len(rooms | set(command.rooms)) > self.max_rooms:
                raise CommandError("too_many_rooms", f"a user may be in {self.max_rooms} rooms")
            rooms.update(command.rooms)
        self.sent.append(command)

    async def connections(self, tenant_id: str, user_id: str) -> list[Entry]:
        if self.failure is not None:
            raise self.failure
        return self.entries.get((tenant_id, user_id), [])

    async def presence(self, tenant_id: str, user_ids: list[str]) -> list[PresenceState]:
        if self.failure is not None:
            raise self.failure
        return [PresenceState(u, "offline", (), 0) for u in user_ids]

    async def user_rooms(self, tenant_id: str, user_id: str) -> list[str]:
        if self.failure is not None:
            raise self.failure
        return sorted(self.rooms.get((tenant_id, user_id), ()))


@attrs.define
class LocalApi:
    ops: FakeOperations
    client: ApiClient
    port: Any

    @property
    def port_number(self) -> int:
        return int(self.port.getHost().port)

    def client_with(self, key: str | None) -> ApiClient:
        return ApiClient(self.client.base, key)


@pytest.fixture
def api() -> Iterator[LocalApi]:
    """The API over :class:`FakeOperations`, 1 KiB body limit, on a free port."""
    ops = FakeOperations()
    keys = ApiKeys.parse(KEYS_TEXT)
    openapi = load_openapi()
    site = build_api_site(cast(Any, ops), keys, reactor=reactor, max_body=1024, openapi=openapi)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    client = ApiClient(f"http://127.0.0.1:{port.getHost().port}")
    yield LocalApi(ops, client, port)
    pytest_twisted.blockon(Deferred.fromCoroutine(client.close()))
    pytest_twisted.blockon(port.stopListening())


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


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


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "api-keys"
    path.write_text(KEYS_TEXT)
    path.chmod(0o600)
    return path


@pytest.fixture
def api_cluster(
    clean_redis: RedisServer,
    sio: Any,  # noqa: F811
    mint: Any,  # noqa: F811
    keys_file: Path,
) -> Iterator[ApiCluster]:
    """In-process nodes on an empty Redis, and the socket.io-client driver; all stopped after."""
    cluster = ApiCluster(clean_redis, sio, mint, keys_file)
    yield cluster
    if clean_redis.paused:
        clean_redis.resume()
    pytest_twisted.blockon(Deferred.fromCoroutine(cluster.stop()))
