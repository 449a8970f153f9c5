"""A cluster under load, and the faults injected into it, with their figures.

:class:`Harness` joins a :class:`~tests.cluster.conftest.Cluster` (nodes,
balancer, Redis), a :class:`~.population.Population` of official clients,
their ``sync`` traffic and their churn, and measures convergence: the time
until the registry holds exactly the connections the clients hold, and stays
so.  The fault functions (:data:`FAULTS`) are shared by the pytest scenarios
and by the long soak (``python -m tests.reliability.soak``).
"""

from __future__ import annotations

import contextlib
import time
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall, deferLater

from tests.cluster.conftest import LEASE_TTL, Cluster
from tests.reliability.harness import Diff, compare, registry_snapshot
from tests.reliability.measure import rss_kib
from tests.reliability.population import CHURN_OPS, Population
from tests.reliability.traffic import Account, SyncTraffic

__all__ = ["FAULTS", "FaultResult", "Harness", "sleep"]


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


def _ready(health_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{health_url}/readyz", timeout=1.0) as response:
            return response.status == 200
    except OSError:  # 503 (HTTPError), refused, timed out
        return False


class Harness:
    """Clients, traffic and churn over a cluster, and the registry check."""

    def __init__(self, cluster: Cluster, *, seed: int = 1, sync_interval: float = 1.0) -> None:
        self.cluster = cluster
        self.paused: set[str] = set()
        self.population = Population(
            cluster.sio, cluster.mint, self.urls, balancer_url=cluster.balancer.url, seed=seed
        )
        self.traffic = SyncTraffic(self.population, reactor, interval=sync_interval)
        self._churn: LoopingCall | None = None

    def urls(self) -> list[str]:
        """Where a client may connect now: the balancer and every running node."""
        up = [
            n.url
            for sid, n in self.cluster.nodes.items()
            if n.running and n.port is not None and sid not in self.paused
        ]
        return [self.cluster.balancer.url, *up]

    # -- clients -----------------------------------------------------------------

    async def connect_users(
        self,
        users: int,
        devices: int = 2,
        *,
        steady: float = 0.25,
        direct: float = 0.0,
        timeout: float = 60.0,
        batch: int = 50,
    ) -> None:
        """Connect ``users`` users (``batch`` at a time) and wait until every slot is connected."""
        for start in range(0, users, batch):
            self.population.add_users(
                min(batch, users - start),
                devices,
                steady=steady,
                direct=direct,
            )
            await self.wait_connected(timeout)

    async def wait_connected(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.population.all_connected():
            if time.monotonic() > deadline:
                missing = self.population.missing()
                raise AssertionError(
                    f"{len(missing)} slots not connected after {timeout}s: {missing[:5]};"
                    f" refusals {dict(self.population.tracker.refusals)}"
                )
            self.population.restore()
            await sleep(0.1)

    # -- churn -------------------------------------------------------------------

    def start_churn(
        self, per_second: float, *, direct: float = 0.3, ops: tuple[str, ...] = CHURN_OPS
    ) -> None:
        """Churn ``per_second`` slots per second until :meth:`stop_churn`."""
        tick = 0.2
        carry = [0.0]

        def step() -> None:
            carry[0] += per_second * tick
            count = int(carry[0])
            carry[0] -= count
            if count:
                self.population.churn(count, direct=direct, reactor=reactor, ops=ops)

        self._churn = LoopingCall(step)
        self._churn.clock = reactor
        self._churn.start(tick, now=False)

    def stop_churn(self) -> None:
        if self._churn is not None and self._churn.running:
            self._churn.stop()
        self._churn = None

    # -- the registry --------------------------------------------------------------

    def diff(self) -> Diff | None:
        """Registry against clients now; ``None`` when Redis does not answer."""
        try:
            snapshot = registry_snapshot(self.cluster.redis)
        except (OSError, RuntimeError):
            return None
        return compare(snapshot, self.population.live())

    async def converge(
        self,
        timeout: float,
        *,
        since: float | None = None,
        stable: float = 1.0,
        restore: bool = False,
    ) -> float:
        """Seconds from ``since`` until registry == live connections, held for ``stable`` s.

        :param restore: meanwhile, reconnect clients that gave up (between scenarios).
        :raises AssertionError: with the difference, after ``timeout``.
        """
        start = time.monotonic() if since is None else since
        equal_since: float | None = None
        last: Diff | None = None
        while True:
            now = time.monotonic()
            if restore:
                self.population.restore()
            last = self.diff()
            if last is not None and last.equal:
                equal_since = equal_since or now
                if now - equal_since >= stable:
                    return round(equal_since - start, 3)
            else:
                equal_since = None
            if now - start > timeout:
                raise AssertionError(f"registry did not converge within {timeout}s: {last}")
            await sleep(0.05)

    async def settle(self, timeout: float = 30.0) -> float:
        """Every slot connected again and the registry equal to them; returns the seconds."""
        started = time.monotonic()
        await self.wait_connected(timeout)
        return await self.converge(timeout, since=started, restore=True)

    async def ready(self, timeout: float) -> float:
        """Seconds until every running node answers ``/readyz`` 200 (lease, Redis, bus)."""
        started = time.monotonic()
        while True:
            states = [_ready(n.health_url) for n in self.cluster.nodes.values() if n.running]
            if all(states):
                return round(time.monotonic() - started, 3)
            if time.monotonic() - started > timeout:
                raise AssertionError(f"nodes not ready within {timeout}s: {states}")
            await sleep(0.05)

    def counts(self) -> dict[str, int]:
        """Entries per node in the registry."""
        found: dict[str, int] = {}
        for entry in registry_snapshot(self.cluster.redis).entries:
            found[entry["serverId"]] = found.get(entry["serverId"], 0) + 1
        return found

    def rss(self) -> dict[str, int]:
        """RSS in KiB of every running node."""
        return {sid: rss_kib(n.pid) for sid, n in self.cluster.nodes.items() if n.running}


# -- faults ---------------------------------------------------------------------------


@attrs.frozen
class FaultResult:
    name: str
    #: seconds from the end of the fault (restart, resume, kill) until registry == live;
    #: ``None`` when it did not converge within the bound (``unconverged`` says how)
    converge_s: float | None
    during: Account
    before: Account
    after: Account
    #: registry entries differing from the live connections once it is over
    wrong_after: int
    extra: dict[str, Any] = attrs.field(factory=dict)
    unconverged: str = ""
    #: error and critical lines each node logged from the fault to the end
    loud_lines: dict[str, list[str]] = attrs.field(factory=dict)


#: An injection: takes the harness, returns (time the fault ended, facts about it).
Injection = Callable[[Harness], Awaitable[tuple[float, dict[str, Any]]]]


async def run_fault(
    harness: Harness,
    name: str,
    inject: Injection,
    *,
    converge_timeout: float = 20.0,
    window: float = 2.0,
    churn: float = 0.0,
) -> FaultResult:
    """Steady traffic, the fault (with churn), convergence, steady traffic again; the figures."""
    traffic = harness.traffic
    traffic.window = f"before:{name}"
    await sleep(window)
    traffic.window = f"fault:{name}"
    marks = {sid: node.mark() for sid, node in harness.cluster.nodes.items()}
    if churn:
        harness.start_churn(churn)
    try:
        ended, extra = await inject(harness)
    finally:
        harness.stop_churn()
    converge_s: float | None = None
    unconverged = ""
    try:
        converge_s = await harness.converge(converge_timeout, since=ended)
    except AssertionError as e:
        unconverged = str(e)
    ready_s: float | None = None
    with contextlib.suppress(AssertionError):
        ready_s = await harness.ready(10.0)  # the bus proven again on every node
    extra["ready_s"] = ready_s
    traffic.window = f"after:{name}"
    await sleep(window)
    traffic.window = "idle"
    await sleep(1.0)  # the last messages arrive
    pending = extra.pop("_wait", None)
    if pending is not None:
        await pending
    diff = harness.diff()
    loud = {
        sid: [
            line
            for line in node.lines[marks.get(sid, 0) :]
            if '"level": "error"' in line or '"level": "critical"' in line
        ]
        for sid, node in harness.cluster.nodes.items()
    }
    return FaultResult(
        name,
        converge_s,
        traffic.account(f"fault:{name}"),
        traffic.account(f"before:{name}"),
        traffic.account(f"after:{name}"),
        diff.count if diff is not None else -1,
        extra,
        unconverged,
        loud,
    )


async def redis_restart(harness: Harness, down: float = 2.0) -> tuple[float, dict[str, Any]]:
    """Redis killed (SIGKILL), down for ``down`` s, back empty."""
    redis = harness.cluster.redis
    redis.stop()
    await sleep(down)
    redis.start()
    return time.monotonic(), {"down_s": down}


async def redis_pause(harness: Harness, paused: float = 3.0) -> tuple[float, dict[str, Any]]:
    """Redis stopped (SIGSTOP) past every command timeout and lease, then resumed."""
    redis = harness.cluster.redis
    redis.pause()
    try:
        await sleep(paused)
    finally:
        redis.resume()
    return time.monotonic(), {"paused_s": paused}


def _node(harness: Harness, server_id: str | None) -> tuple[str, Any]:
    running = {s: n for s, n in harness.cluster.nodes.items() if n.running}
    server_id = server_id or sorted(running)[0]
    return server_id, running[server_id]


async def node_kill(harness: Harness, server_id: str | None = None) -> tuple[float, dict[str, Any]]:
    """A node SIGKILLed; the balancer stops sending clients there (its health check)."""
    server_id, node = _node(harness, server_id)
    cluster = harness.cluster
    held = {
        e["socketId"]
        for e in registry_snapshot(cluster.redis).entries
        if e["serverId"] == server_id
    }
    cluster.balancer.remove(node.port)
    node.kill()
    killed = time.monotonic()
    extra: dict[str, Any] = {"node": server_id, "entries": len(held)}

    async def reaped() -> None:
        # Its clients come back elsewhere at once (their new connections replace the
        # entries); the node itself is reaped once its lease expired.
        while cluster.command("HGET", "caas:nodes", server_id) is not None:
            if time.monotonic() - killed > 2 * LEASE_TTL + 2.0:
                return
            await sleep(0.05)
        extra["reaped_after_s"] = round(time.monotonic() - killed, 3)

    extra["_wait"] = Deferred.fromCoroutine(reaped())
    return killed, extra


async def node_pause(
    harness: Harness, server_id: str | None = None, longest: float = 4 * LEASE_TTL
) -> tuple[float, dict[str, Any]]:
    """A node SIGSTOPped until another node reaped it, then resumed.

    After the resume, the registry is watched for its old entries: a reaped
    node must never bring one back (``resurrected``).
    """
    cluster = harness.cluster
    server_id, node = _node(harness, server_id)
    old = {
        e["socketId"]
        for e in registry_snapshot(cluster.redis).entries
        if e["serverId"] == server_id
    }
    cluster.balancer.remove(node.port)
    harness.paused.add(server_id)
    paused_at = time.monotonic()
    node.pause()
    try:
        while True:
            await sleep(0.05)
            left = old & {e["socketId"] for e in registry_snapshot(cluster.redis).entries}
            if not left and not cluster.node_sockets(server_id):
                break
            if time.monotonic() - paused_at > longest:
                raise AssertionError(
                    f"node {server_id} not reaped within {longest}s: {len(left)} left"
                )
        reaped_after = time.monotonic() - paused_at
        await sleep(0.5)
    finally:
        node.resume()
        harness.paused.discard(server_id)
    resumed = time.monotonic()
    cluster.balancer.add(node.port)
    resurrected: set[str] = set()
    while time.monotonic() - resumed < 3.0:
        resurrected |= old & {e["socketId"] for e in registry_snapshot(cluster.redis).entries}
        await sleep(0.05)
    return resumed, {
        "node": server_id,
        "entries": len(old),
        "reaped_after_s": round(reaped_after, 3),
        "resurrected": len(resurrected),
    }


FAULTS: dict[str, Injection] = {
    "redis-restart": redis_restart,
    "redis-pause": redis_pause,
    "node-kill": node_kill,
    "node-pause": node_pause,
}
