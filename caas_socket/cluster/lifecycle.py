"""A node's lease, the reconciliation of its entries, and the reaping of dead nodes.

The lease is renewed every third of its lifetime.  Renewal tells the node
what happened while it was not looking:

* ``HELD``: all is well (reconcile only if a write was lost meanwhile);
* ``REACQUIRED``: the lease had vanished without a reap (Redis restarted
  empty, or we were paused past the TTL but nobody reaped us): put our live
  entries back and remove ours that are no longer alive;
* ``REAPED``: another node removed our entries as dead.  They stay removed:
  we close every local connection (their clients reconnect, anywhere, and
  register afresh) and take a new lease.

Every node also sweeps for expired leases every quarter of the lifetime and
reaps them, so a node killed outright disappears from the registry within
about ``1.25 * ttl`` (12.5 s with the default 10 s).  A node reaps only after
it has been in touch with the registry for a whole ``ttl``: after an outage
longer than the lease, every lease has lapsed, and the live nodes need one
renewal period to take theirs back before anyone may call them dead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import MultiService
from twisted.logger import Logger

from ..app.devices import Kicker, LocalKicker
from ..periodic import PeriodicService
from ..registry.health import BackendHealth
from ..registry.interfaces import Entry, Fenced, LeaseState, Registry, RegistryUnavailable

__all__ = ["NodeLifecycle"]


class NodeLifecycle(MultiService):
    """Keeps this node's lease and registry entries true; reaps dead nodes."""

    log = Logger()

    def __init__(
        self,
        clock: Any,
        registry: Registry,
        local: LocalKicker,
        health: BackendHealth,
        *,
        server_id: str,
        ttl: float,
        on_reaped: Callable[[list[Entry]], None] | None = None,
        kicker: Kicker | None = None,
    ) -> None:
        super().__init__()
        self._registry = registry
        self._local = local
        self._health = health
        self.server_id = server_id
        self.ttl = ttl
        self._on_reaped = on_reaped
        #: Closes connections that lost their device, on whichever node they live.
        self._kicker: Kicker = kicker or local
        #: Called after each reconcile with this node's live entries, the ghosts
        #: removed, and whether the registry had lost everything (presence).
        self.on_reconciled: Callable[[list[Entry], list[Entry], bool], Any] | None = None
        self._clock = clock
        self.leased = False
        self.reaped_nodes = 0
        self.reconciliations = 0
        PeriodicService(clock, ttl / 3, self.renew, "lease renewal").setServiceParent(self)
        PeriodicService(clock, ttl / 4, self.sweep, "dead-node sweep", now=False).setServiceParent(
            self
        )

    async def renew(self) -> None:
        """Take or extend the lease, and act on what renewal says."""
        if not self.leased:
            await self._acquire()
            return
        try:
            state = await self._registry.renew_lease()
        except RegistryUnavailable as e:
            self._health.failed("renew lease", e)
            return
        self._health.succeeded()
        if state is LeaseState.REAPED:
            self.log.error(
                "node {server_id} was reaped as dead by another node: closing its"
                " {count} connections so they register afresh",
                server_id=self.server_id,
                count=len(self._local.registered),
                event="lease_lost",
            )
            self.leased = False
            for socket in list(self._local.registered.values()):
                socket.close_connection("forced close")
            await self._acquire()
        elif state is LeaseState.REACQUIRED:
            self.log.warn(
                "lease of node {server_id} had vanished (registry restarted or node paused):"
                " restoring its entries",
                server_id=self.server_id,
                event="lease_reacquired",
            )
            await self.reconcile(lost_state=True)
        elif self._health.dirty:
            await self.reconcile()

    async def _acquire(self) -> None:
        try:
            stale = await self._registry.acquire_lease(self.server_id, self.ttl)
        except (RegistryUnavailable, Fenced) as e:
            self._health.failed("acquire lease", e)
            return
        self._health.succeeded()
        self.leased = True
        self.log.info(
            "node {server_id} holds its lease (ttl {ttl}s); {stale} entries of an earlier"
            " incarnation removed",
            server_id=self.server_id,
            ttl=self.ttl,
            stale=len(stale),
            event="lease_acquired",
        )
        if stale and self._on_reaped is not None:
            self._on_reaped(stale)
        await self.reconcile()

    async def reconcile(self, *, lost_state: bool = False) -> None:
        """Make the registry hold exactly this node's live connections.

        :param lost_state: the registry lost its contents (a restart): whatever
            else derives from live connections (presence) must be rebuilt too.
        """
        try:
            stored = await self._registry.server_entries(self.server_id)
            lost = await self._registry.restore(self._local.live_entries())
            alive = set(self._local.registered) | self._local.pending
            ghosts = [e for e in stored if e.socket_id not in alive]
            for ghost in ghosts:
                await self._registry.unregister(ghost)
        except RegistryUnavailable as e:
            self._health.failed("reconcile", e)
            return
        except Fenced as e:
            self._health.failed("reconcile", e)
            self.leased = False
            return
        self._health.succeeded()
        self._health.dirty = False
        self.reconciliations += 1
        if self.on_reconciled is not None:
            self.on_reconciled(self._local.live_entries(), ghosts, lost_state)
        for entry in lost:
            # The same device holds a newer connection (here or elsewhere).
            self._kicker.kick(entry, "replaced")
        self.log.info(
            "registry reconciled: {live} live, {ghosts} ghosts removed, {lost} lost to newer",
            live=len(self._local.registered),
            ghosts=len(ghosts),
            lost=len(lost),
            event="reconciled",
        )

    async def sweep(self) -> None:
        """Reap every node whose lease expired."""
        if not self.leased or not self._health.available:
            return
        if self._clock.seconds() - self._health.recovered_at < self.ttl:
            return  # the others may still be taking their leases back
        try:
            expired = await self._registry.expired_servers()
            for server_id in expired:
                if server_id == self.server_id:
                    continue
                removed = await self._registry.reap(server_id)
                if removed is None:
                    continue  # it renewed meanwhile: alive
                self.reaped_nodes += 1
                self.log.warn(
                    "reaped dead node {dead}: {count} entries removed",
                    dead=server_id,
                    count=len(removed),
                    event="node_reaped",
                )
                if removed and self._on_reaped is not None:
                    self._on_reaped(removed)
        except RegistryUnavailable as e:
            self._health.failed("sweep", e)

    async def release(self) -> None:
        """Clean stop: remove this node's entries and give the lease up."""
        try:
            await self._registry.release_lease()
        except RegistryUnavailable as e:
            self._health.failed("release lease", e)
        self.leased = False
