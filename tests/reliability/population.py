"""Many official socket.io-clients, their churn, and what each of them holds right now.

A :class:`Population` is a fixed set of *slots*, one per (tenant, user, device
position); a slot is served by one driver client at a time.  Churn acts on the
slots as real apps do: drop the TCP connection (the client reconnects by
itself), disconnect and come back later, reconnect from a new client with the
same device id (the older connection is replaced) or with a new device id.
:class:`Tracker` reads the driver's events incrementally, so that a check
costs the events since the last one, not all of them.
"""

from __future__ import annotations

import itertools
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import attrs

from tests.reliability.harness import Live
from tests.support.sio_driver import SioDriver

__all__ = ["CHURN_OPS", "Population", "Slot", "Tracker"]

#: socket.io-client reconnects after 100-200 ms (the apps wait about a second).
FAST_RECONNECT = {"reconnectionDelay": 100, "reconnectionDelayMax": 200}
#: Tokens of the population outlive any soak.
TOKEN_TTL = 48 * 3600


class Tracker:
    """What every client of one driver holds, updated from its events on demand."""

    def __init__(self, driver: SioDriver) -> None:
        self.driver = driver
        self._next = 0
        self.sid: dict[str, str | None] = {}
        #: Whether the client reconnects by itself (socket.io's ``socket.active``).
        self.active: dict[str, bool] = {}
        self.connects = 0
        self.disconnects: Counter[str] = Counter()
        self.refusals: Counter[str] = Counter()
        self.errors: list[dict[str, Any]] = []
        #: sync message number -> [(receiving client, time.monotonic())]
        self.received: dict[int, list[tuple[str, float]]] = defaultdict(list)
        #: every other server event, by name
        self.events: Counter[str] = Counter()
        self.on_event: Callable[[dict[str, Any]], None] | None = None

    def update(self) -> None:
        events = self.driver.events
        end = len(events)
        for i in range(self._next, end):
            event = events[i]
            kind, client = event.get("type"), event.get("id")
            if kind == "event":
                if event.get("name") == "sync":
                    body = event["args"][0] if event["args"] else None
                    if isinstance(body, dict) and isinstance(body.get("n"), int):
                        self.received[body["n"]].append((client, event["received"]))
                else:
                    self.events[event.get("name")] += 1
                    if self.on_event is not None:
                        self.on_event(event)
            elif kind == "connect":
                self.sid[client] = event["sid"]
                self.active[client] = True
                self.connects += 1
            elif kind == "disconnect":
                self.sid[client] = None
                self.active[client] = bool(event.get("active"))
                self.disconnects[event.get("reason")] += 1
            elif kind == "connect_error":
                self.active[client] = bool(event.get("active"))
                self.refusals[event.get("message")] += 1
            elif kind == "reconnect_failed":
                self.active[client] = False
            elif kind in ("error", "exited"):
                self.errors.append(event)
        self._next = end

    def compact(self) -> None:
        """Forget the driver's events read so far (long soaks); no ``wait_for`` may be pending."""
        self.update()
        del self.driver.events[:]
        self.driver._consumed.clear()
        self._next = 0


@attrs.define
class Slot:
    index: int
    tenant: str
    user: str
    device: str
    steady: bool
    client: str = ""
    url: str = ""
    generation: int = 0
    #: time.monotonic() before which no churn touches this slot
    busy_until: float = 0.0


CHURN_OPS = ("drop", "disconnect", "replace", "new_device")


class Population:
    """Slots of users with several devices each, on the nodes of a cluster.

    :param urls: called for the addresses a new client may use now (the
        balancer and the running nodes).
    :param mint: ``mint(user, tenant, ttl=...)`` a token the nodes accept.
    """

    def __init__(
        self,
        driver: SioDriver,
        mint: Callable[..., str],
        urls: Callable[[], list[str]],
        *,
        balancer_url: str,
        seed: int = 1,
        reconnect: dict[str, Any] | None = None,
    ) -> None:
        self.driver = driver
        self.tracker = Tracker(driver)
        self.mint = mint
        self.urls = urls
        self.balancer_url = balancer_url
        self.rng = random.Random(seed)
        self.reconnect = dict(FAST_RECONNECT if reconnect is None else reconnect)
        self.slots: list[Slot] = []
        #: client id -> (tenant, user, device)
        self.clients: dict[str, tuple[str, str, str]] = {}
        self.created: dict[str, float] = {}
        self._ids = itertools.count()
        self._tokens: dict[tuple[str, str], str] = {}
        self.ops: Counter[str] = Counter()
        self._acted: dict[str, float] = {}

    # -- building ----------------------------------------------------------------

    def add_users(
        self,
        users: int,
        devices: int = 2,
        *,
        steady: float = 0.25,
        direct: float = 0.0,
        tenants: int = 3,
        prefix: str = "u",
    ) -> list[Slot]:
        """Add ``users`` users of ``devices`` devices each and connect them.

        :param steady: the fraction of users that never churn (their traffic must all arrive).
        :param direct: the probability that a connection goes to a node directly,
            not through the balancer.
        """
        added = []
        first = len({(s.tenant, s.user) for s in self.slots})
        for u in range(first, first + users):
            is_steady = u - first < round(users * steady)
            tenant, user = f"t{u % tenants}", f"{prefix}{u}"
            for d in range(devices):
                slot = Slot(len(self.slots), tenant, user, f"d{d}", is_steady)
                self.slots.append(slot)
                self._connect(slot, self._url(direct))
                added.append(slot)
        return added

    def _url(self, direct: float) -> str:
        nodes = [u for u in self.urls() if u != self.balancer_url]
        if nodes and self.rng.random() < direct:
            return self.rng.choice(nodes)
        return self.balancer_url

    def token(self, tenant: str, user: str) -> str:
        key = (tenant, user)
        if key not in self._tokens:
            self._tokens[key] = self.mint(user, tenant, ttl=TOKEN_TTL)
        return self._tokens[key]

    def _connect(self, slot: Slot, url: str) -> str:
        client = f"c{next(self._ids)}"
        self.clients[client] = (slot.tenant, slot.user, slot.device)
        self.created[client] = time.monotonic()
        slot.client, slot.url = client, url
        self.driver.connect(
            client,
            url,
            auth={"token": self.token(slot.tenant, slot.user)},
            query={"deviceId": slot.device},
            **self.reconnect,
        )
        return client

    # -- state -------------------------------------------------------------------

    def live(self) -> list[Live]:
        """Every connection some client holds now (retired clients included)."""
        self.tracker.update()
        sid = self.tracker.sid
        return [
            Live(s, *self.clients[c]) for c, s in sid.items() if s is not None and c in self.clients
        ]

    def connected(self, slot: Slot) -> bool:
        return self.tracker.sid.get(slot.client) is not None

    def users(self) -> dict[tuple[str, str], list[Slot]]:
        grouped: dict[tuple[str, str], list[Slot]] = defaultdict(list)
        for slot in self.slots:
            grouped[(slot.tenant, slot.user)].append(slot)
        return grouped

    def all_connected(self) -> bool:
        self.tracker.update()
        return all(self.connected(s) for s in self.slots)

    def missing(self) -> list[Slot]:
        self.tracker.update()
        return [s for s in self.slots if not self.connected(s)]

    # -- churn -------------------------------------------------------------------

    def churn(
        self, count: int, *, direct: float, reactor: Any, ops: tuple[str, ...] = CHURN_OPS
    ) -> int:
        """Apply ``count`` random operations to connected, non-steady, idle slots."""
        self.tracker.update()
        now = time.monotonic()
        idle = [s for s in self.slots if not s.steady and s.busy_until <= now and self.connected(s)]
        done = 0
        for slot in self.rng.sample(idle, min(count, len(idle))):
            op = self.rng.choice(ops)
            self.ops[op] += 1
            slot.busy_until = now + 1.0
            client = slot.client
            if op == "drop":
                self.driver.close_engine(client)
            elif op == "disconnect":
                self.driver.disconnect(client)
                delay = self.rng.uniform(0.1, 1.0)
                reactor.callLater(delay, self._reopen, slot, client)
                slot.busy_until = now + delay + 1.0
            elif op == "replace":
                self._connect(slot, self._url(direct))  # same device: the old one is replaced
            else:
                self.driver.disconnect(client)
                slot.generation += 1
                slot.device = f"d{slot.index % 1000}.{slot.generation}"
                self._connect(slot, self._url(direct))
            done += 1
        return done

    def _reopen(self, slot: Slot, client: str) -> None:
        if slot.client == client:
            self.driver.open(client)

    def restore(self, *, patience: float = 3.0) -> int:
        """Get every slot connected again: reopen, or re-home a client whose node is gone.

        A client is given ``patience`` seconds after its creation or after our
        last action before it is acted on again.  Returns the actions taken.
        """
        self.tracker.update()
        now = time.monotonic()
        alive = set(self.urls())
        acted = 0
        for slot in self.slots:
            client = slot.client
            if self.connected(slot):
                continue
            last = max(self.created.get(client, 0.0), self._acted.get(client, 0.0))
            if now - last < patience:
                continue
            if self.tracker.active.get(client) and slot.url in alive:
                continue  # reconnecting by itself
            if slot.url in alive and client in self.tracker.active:
                self.driver.open(client)
                self._acted[client] = now
            else:
                self.driver.disconnect(client)
                self._acted[self._connect(slot, self.balancer_url)] = now
            acted += 1
        return acted

    def __iter__(self) -> Iterator[Slot]:
        return iter(self.slots)
