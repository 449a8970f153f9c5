"""Fixtures of the cluster tests: a real Redis, real nodes, a balancer, the official client.

Everything here reuses the shared infrastructure: nodes are started by the
``caas_node`` fixture of ``tests/interop`` (stopped by PID at teardown), clients
are the ``sio`` driver, tokens come from ``mint``, and Redis is the module's
``redis_server`` emptied by ``clean_redis``.  What this adds:

* ``cluster``: a :class:`Cluster`, which starts nodes of one cluster (in
  parallel, ready once they hold their lease and hear the bus), puts them
  behind a :class:`~tests.support.balancer.Balancer`, connects clients as the
  apps do, follows the presence events a watching client receives, and reads
  the registry straight from Redis (key layout of ``docs/REDIS.rst``, default
  prefix).

Settings are short so that every test is bounded: leases of 2 s (a dead node
is reaped within 2.5 s), a presence grace of 1 s, a drain period of 2 s.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from caas_socket.naming import escape
from tests.interop.conftest import (  # reused as they are: fixtures and the failure report
    _report_on_failure,  # noqa: F401
    caas_node,  # noqa: F401
    mint,  # noqa: F401
    pytest_runtest_makereport,  # noqa: F401
    secret,  # noqa: F401
    sio,  # noqa: F401
)
from tests.support.balancer import Balancer
from tests.support.nodes import CaasNode
from tests.support.redis_server import RedisServer
from tests.support.sio_driver import DriverError, SioDriver

T = TypeVar("T")

PREFIX = "caas:"
LEASE_TTL = 2.0
GRACE = 1.0
DRAIN = 2.0
#: How often each node checks for due presence changes (``service.PRESENCE_SWEEP_INTERVAL``).
PRESENCE_SWEEP = 1.0
#: Every node of every test: short leases, grace and drain.
COMMON = (
    "--lease-ttl",
    f"{LEASE_TTL}s",
    "--presence-grace",
    f"{GRACE}s",
    "--drain-period",
    f"{DRAIN}s",
)
#: Fast heartbeats, for tests where a silent peer must be noticed at once.
FAST_PINGS = ("--ping-interval", "300ms", "--ping-timeout", "300ms")
#: socket.io-client reconnects within 100-200 ms (the apps wait ~1 s).
FAST_RECONNECT = {"reconnectionDelay": 100, "reconnectionDelayMax": 200}
#: A node is ready for clients once it holds its lease and listens to the bus.
READY = (r"node \S+ started", r"registry reconciled", r"bus subscribed")


def user_key(tenant: str, user: str) -> str:
    """``caas:conn:{tenant}:{user}``, ids escaped as docs/REDIS.rst says."""
    return f"{PREFIX}conn:{escape(tenant)}:{escape(user)}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Cluster:
    """The nodes of one test, its balancer, its clients and a view of the registry."""

    def __init__(
        self,
        start_node: Callable[..., CaasNode],
        redis: RedisServer,
        driver: SioDriver,
        minter: Callable[..., str],
        jwt_secret: str,
    ) -> None:
        self._start_node = start_node
        self.redis = redis
        self.sio = driver
        self.mint = minter
        self.secret = jwt_secret
        self.balancer = Balancer(reactor).start()
        self.nodes: dict[str, CaasNode] = {}

    # -- nodes -----------------------------------------------------------------

    def args(self, server_id: str, *extra: str) -> list[str]:
        """The command line of node ``server_id`` of this cluster."""
        return [
            "--jwt-secret",
            self.secret,
            "--redis",
            self.redis.url,
            "--server-id",
            server_id,
            *COMMON,
            *extra,
        ]

    async def start(
        self,
        *server_ids: str,
        args: Sequence[str] = (),
        ready: Sequence[str] = READY,
        balanced: bool = True,
    ) -> list[CaasNode]:
        """Start nodes (in parallel, off the reactor thread) and wait until each is ready.

        :param args: more options, for every one of them.
        :param balanced: put them behind the balancer, in the order given.
        """

        def one(server_id: str) -> CaasNode:
            return self._start_node(*self.args(server_id, *args), ready=list(ready))

        nodes = await gatherResults([deferToThread(one, s) for s in server_ids])
        for server_id, node in zip(server_ids, nodes, strict=True):
            self.nodes[server_id] = node
            if balanced:
                self.balancer.add(node.port)  # type: ignore[arg-type]
        return list(nodes)

    # -- clients ---------------------------------------------------------------

    def connect(
        self,
        client_id: str,
        url: str,
        user: str,
        device: str,
        *,
        tenant: str = "t1",
        token: str | None = None,
        **opts: Any,
    ) -> None:
        """Connect like the apps do (``auth.token``, ``query.deviceId``), without waiting."""
        token = token if token is not None else self.mint(user, tenant)
        self.sio.connect(client_id, url, auth={"token": token}, query={"deviceId": device}, **opts)

    async def connected(self, client_id: str, *args: Any, **kwargs: Any) -> str:
        """:meth:`connect` and wait for the connection; returns the socket id."""
        self.connect(client_id, *args, **kwargs)
        event = await self.sio.wait_for(client_id, ("connect", "connect_error"), 5.0)
        if event["type"] != "connect":
            raise DriverError(f"client {client_id} was refused: {event}")
        return str(event["sid"])

    def sid(self, client_id: str) -> str | None:
        """The socket id the client holds now (``None`` while disconnected)."""
        state = None
        for event in self.sio.events:
            if event.get("id") == client_id and event.get("type") in ("connect", "disconnect"):
                state = event.get("sid") if event["type"] == "connect" else None
        return state

    def live_sids(self, client_ids: Sequence[str]) -> set[str]:
        """The socket ids of those clients that are connected now."""
        return {sid for sid in (self.sid(c) for c in client_ids) if sid is not None}

    def presence_changes(self, watcher: str, user: str | None = None) -> list[dict[str, Any]]:
        """The ``presence`` events ``watcher`` received so far (of ``user``), oldest first."""
        bodies = [e["args"][0] for e in self.sio.seen(watcher, "presence")]
        return [b for b in bodies if user is None or b["userId"] == user]

    async def presence_change(
        self,
        watcher: str,
        user: str,
        status: str,
        timeout: float,
        *,
        device: str | None = None,
        since: int = 0,
    ) -> dict[str, Any]:
        """Wait for a ``presence`` event of ``user`` (``device``: None for the user as a whole).

        :param since: ignore the first ``since`` changes of that user.
        """

        def arrived() -> dict[str, Any]:
            for body in self.presence_changes(watcher, user)[since:]:
                if body["status"] == status and body["deviceId"] == device:
                    return body
            raise AssertionError(
                f"{watcher} got no {status} of {user}/{device}: {self.presence_changes(watcher)}"
            )

        return await self.eventually(arrived, timeout, interval=0.02)

    # -- the registry, read from Redis -----------------------------------------

    def command(self, *args: str | bytes | int) -> Any:
        return self.redis.command(*args)

    @staticmethod
    def user_key(tenant: str, user: str) -> str:
        return user_key(tenant, user)

    def devices(self, tenant: str, user: str) -> dict[str, dict[str, Any]]:
        """Device id -> entry of one user (``HGETALL conn:{tenant}:{user}``)."""
        raw = self.command("HGETALL", user_key(tenant, user)) or []
        return {_text(raw[i]): json.loads(raw[i + 1]) for i in range(0, len(raw), 2)}

    def entries(self) -> list[dict[str, Any]]:
        """Every entry of every user hash."""
        found = []
        for key in self.command("KEYS", f"{PREFIX}conn:*") or []:
            found += [json.loads(v) for v in self.command("HVALS", key) or []]
        return found

    def registry_sids(self) -> set[str]:
        """The socket ids of every entry; also checks each is indexed by its node."""
        entries = self.entries()
        sids = {e["socketId"] for e in entries}
        assert len(sids) == len(entries), f"a socket id is registered twice: {entries}"
        return sids

    def node_sockets(self, server_id: str) -> set[str]:
        """``SMEMBERS server:{server}:sockets``."""
        members = self.command("SMEMBERS", f"{PREFIX}server:{escape(server_id)}:sockets")
        return {_text(m) for m in members or []}

    # -- time ------------------------------------------------------------------

    @staticmethod
    async def sleep(seconds: float) -> None:
        await deferLater(reactor, seconds, lambda: None)

    async def eventually(
        self, check: Callable[[], T | Awaitable[T]], timeout: float, interval: float = 0.1
    ) -> T:
        """Call ``check`` until it returns without an AssertionError; re-raise after ``timeout``.

        ``check`` may be a coroutine function (say, one making an HTTP request).
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                result = check()
                if inspect.isawaitable(result):
                    return await result
                return result
            except AssertionError:
                if time.monotonic() >= deadline:
                    raise
            await self.sleep(interval)

    async def always(
        self, check: Callable[[], object], during: float, interval: float = 0.1
    ) -> None:
        """Assert that ``check`` holds every ``interval`` for ``during`` seconds."""
        deadline = time.monotonic() + during
        while True:
            check()
            if time.monotonic() >= deadline:
                return
            await self.sleep(interval)


@pytest.fixture
def cluster(
    clean_redis: RedisServer,
    caas_node: Callable[..., CaasNode],  # noqa: F811
    sio: SioDriver,  # noqa: F811
    mint: Callable[..., str],  # noqa: F811
    secret: str,  # noqa: F811
) -> Iterator[Cluster]:
    """A cluster on an empty Redis; nodes, clients and the balancer all go at teardown."""
    built = Cluster(caas_node, clean_redis, sio, mint, secret)
    yield built
    pytest_twisted.blockon(Deferred.fromCoroutine(built.balancer.stop()))
