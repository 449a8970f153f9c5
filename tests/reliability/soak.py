"""The long soak, on demand: churn, traffic and faults for minutes, then a table of figures.

::

    python -m tests.reliability.soak --nodes 3 --clients 2000 --minutes 30 --faults all \\
        --json soak.json

It runs what the CI scenarios run (``scenario.py``), longer and larger: a
Redis and ``--nodes`` nodes on free ports of 127.0.0.1 behind the test
balancer, ``--clients`` official socket.io-clients (two devices per user,
some users steady, the others churning through the balancer and directly),
``sync`` traffic, and every ``--fault-every`` seconds the next fault of
``--faults`` (redis-restart, redis-pause, node-kill, node-pause; a killed
node is started again).  Every ``--check-every`` seconds the churn pauses,
every client is brought back and the registry must equal the live
connections; each node's RSS is taken then.  Everything it started is
stopped by PID at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import react

from caas_socket.auth import mint_token
from tests.cluster.conftest import Cluster
from tests.interop.conftest import SECRET
from tests.reliability import figures
from tests.reliability.figures import figure, rss_growth
from tests.reliability.harness import NodeGroup
from tests.reliability.population import CHURN_OPS, Population
from tests.reliability.scenario import FAULTS, Harness, run_fault, sleep
from tests.support.redis_server import RedisServer
from tests.support.sio_driver import SioDriver

NODE_ARGS = ("--redis-timeout", "500ms")


def _mint(user: str, tenant: str = "t1", **kwargs: Any) -> str:
    return mint_token(SECRET.encode(), sub=user, tenant_id=tenant, **kwargs)


def retire_stragglers(population: Population) -> int:
    """Disconnect clients that left their slot but are still connected (server left them open)."""
    current = {slot.client for slot in population.slots}
    stragglers = [
        c
        for c, sid in population.tracker.sid.items()
        if sid is not None and c not in current and c in population.clients
    ]
    for client in stragglers:
        population.driver.disconnect(client)
    return len(stragglers)


class Soak:
    def __init__(self, args: argparse.Namespace, cluster: Cluster, ids: list[str]) -> None:
        self.args, self.cluster, self.ids = args, cluster, ids
        self.harness = Harness(cluster, seed=args.seed, sync_interval=args.sync_interval)
        self.checks: list[dict[str, Any]] = []
        self.faults: list[dict[str, Any]] = []
        self.stragglers = 0
        self.segment = 0
        self.ops = tuple(op for op in args.ops.split(",") if op)
        #: steady deliveries per segment (the time between two checks), after what
        self.segments: list[dict[str, Any]] = []
        self._after = "start"

    def steady(self, after: str) -> None:
        """Open a new steady window (churn and traffic between two checks)."""
        self.segment += 1
        self._after = after
        self.harness.traffic.window = f"steady-{self.segment}"

    def _describe(self, sample: tuple[tuple[int, str, str, float], ...]) -> list[dict[str, Any]]:
        """Where the lost deliveries were: clients, identities, and the nodes they were on."""
        population = self.harness.population
        out = []
        for n, sender, receiver, at in sample:
            out.append(
                {
                    "n": n,
                    "sent_s": round(at - self.started, 3),
                    "sender": [
                        sender,
                        population.clients.get(sender),
                        population.tracker.sid.get(sender),
                    ],
                    "receiver": [
                        receiver,
                        population.clients.get(receiver),
                        population.tracker.sid.get(receiver),
                    ],
                }
            )
        return out

    def close_segment(self) -> None:
        if self.segment:
            account = self.harness.traffic.account(f"steady-{self.segment}")
            self.segments.append(
                {
                    "segment": self.segment,
                    "after": self._after,
                    "expected": account.expected,
                    "lost": account.lost,
                    "duplicates": account.duplicates,
                    "foreign": account.foreign,
                    "p99_ms": account.p99_ms,
                }
            )
            if account.lost or account.duplicates or account.foreign:
                print(
                    f"segment {self.segment} after {self._after}: {self.segments[-1]}", flush=True
                )

    async def check(self, label: str) -> dict[str, Any]:
        """Churn paused: everyone back, registry == live, RSS per node."""
        harness = self.harness
        harness.stop_churn()
        harness.traffic.window = "check"
        await sleep(1.5)  # the segment's last messages arrive
        self.close_segment()
        result: dict[str, Any] = {"label": label, "at_s": round(time.monotonic() - self.started, 1)}
        try:
            result["settle_s"] = await harness.settle(timeout=30.0)
        except AssertionError as e:
            result["settle_s"] = None
            result["unconverged"] = str(e)[:300]
            straggling = retire_stragglers(harness.population)
            self.stragglers += straggling
            result["stragglers_disconnected"] = straggling
            try:
                result["settle_after_s"] = await harness.settle(timeout=30.0)
            except AssertionError as again:
                result["still_unconverged"] = str(again)[:300]
        diff = harness.diff()
        result["wrong"] = diff.count if diff is not None else -1
        result["rss_kib"] = harness.rss()
        result["connections"] = harness.counts()
        self.checks.append(result)
        print(f"check {label}: {result}", flush=True)
        return result

    async def fault(self, name: str) -> None:
        harness = self.harness
        harness.stop_churn()
        result = await run_fault(
            harness, name, FAULTS[name], converge_timeout=20.0, churn=self.args.churn / 4
        )
        entry = {
            "fault": name,
            "converge_s": result.converge_s,
            "lost": result.during.lost,
            "expected": result.during.expected,
            "wrong_after": result.wrong_after,
            "after_lost": result.after.lost,
            "loud_lines": max((len(v) for v in result.loud_lines.values()), default=0),
            **result.extra,
        }
        if result.unconverged:
            entry["unconverged"] = result.unconverged[:300]
        self.faults.append(entry)
        print(f"fault {name}: {entry}", flush=True)
        if name == "node-kill":
            server_id = result.extra["node"]
            (node,) = await self.cluster.start(server_id, args=NODE_ARGS)
            print(f"node {server_id} started again on port {node.port}", flush=True)

    async def run(self) -> None:
        args, harness = self.args, self.harness
        self.started = time.monotonic()
        await self.cluster.start(*self.ids, args=NODE_ARGS)
        users = args.clients // 2
        connect_started = time.monotonic()
        await harness.connect_users(users, 2, steady=args.steady, direct=args.direct, timeout=120)
        figure(
            "soak",
            "connect_all_s",
            round(time.monotonic() - connect_started, 1),
            "s",
            clients=users * 2,
        )
        harness.traffic.start()
        harness.start_churn(args.churn, direct=args.direct, ops=self.ops)
        await sleep(min(60.0, args.minutes * 6))
        baseline = await self.check("baseline")
        deadline = self.started + args.minutes * 60
        faults = list(FAULTS) if args.faults == "all" else [f for f in args.faults.split(",") if f]
        next_fault = time.monotonic() + args.fault_every
        next_check = time.monotonic() + args.check_every
        turn = 0
        self.steady("baseline")
        harness.start_churn(args.churn, direct=args.direct, ops=self.ops)
        while time.monotonic() < deadline:
            await sleep(1.0)
            harness.population.tracker.update()
            if len(harness.population.driver.events) > 200_000:
                harness.population.tracker.compact()
            now = time.monotonic()
            if faults and now >= next_fault:
                name = faults[turn % len(faults)]
                turn += 1
                harness.stop_churn()
                harness.traffic.window = "check"
                await sleep(1.5)
                self.close_segment()
                await self.fault(name)
                await self.check(f"after-{name}")
                self.steady(name)
                harness.start_churn(args.churn, direct=args.direct, ops=self.ops)
                next_fault = time.monotonic() + args.fault_every
            elif now >= next_check:
                await self.check("periodic")
                self.steady("periodic check")
                harness.start_churn(args.churn, direct=args.direct, ops=self.ops)
                next_check = time.monotonic() + args.check_every
        harness.stop_churn()
        final = await self.check("final")
        harness.traffic.stop()
        self.report(baseline, final)

    def report(self, baseline: dict[str, Any], final: dict[str, Any]) -> None:
        population = self.harness.population
        minutes = round((time.monotonic() - self.started) / 60, 1)
        figure(
            "soak", "duration", minutes, "min", nodes=len(self.ids), clients=len(population.slots)
        )
        figure(
            "soak",
            "churn_operations",
            sum(population.ops.values()),
            "ops",
            by_kind=dict(population.ops),
        )
        figure("soak", "connects", population.tracker.connects, "connects")
        segments = self.segments
        figure(
            "soak",
            "steady_sync_lost",
            sum(s["lost"] for s in segments),
            "deliveries",
            expected=sum(s["expected"] for s in segments),
            segments_with_loss=[
                (s["segment"], s["after"], s["lost"]) for s in segments if s["lost"]
            ],
            foreign=sum(s["foreign"] for s in segments),
            duplicates=sum(s["duplicates"] for s in segments),
            p99_ms_max=max((s["p99_ms"] for s in segments), default=0),
        )
        settles = [c["settle_s"] for c in self.checks if c.get("settle_s") is not None]
        unconverged = [c for c in self.checks if c.get("settle_s") is None]
        figure(
            "soak",
            "checks",
            len(self.checks),
            "",
            unconverged=len(unconverged),
            settle_max_s=max(settles or [0]),
            stragglers_disconnected=self.stragglers,
        )
        figure("soak", "final_wrong_entries", final["wrong"], "entries")
        for server_id in sorted(final["rss_kib"]):
            before = baseline["rss_kib"].get(server_id)
            after = final["rss_kib"][server_id]
            if before is None:
                continue
            rss_growth(
                "soak",
                server_id,
                before,
                after,
                (baseline["connections"].get(server_id), final["connections"].get(server_id)),
            )
        by_fault: dict[str, list[dict[str, Any]]] = {}
        for entry in self.faults:
            by_fault.setdefault(entry["fault"], []).append(entry)
        for name, entries in by_fault.items():
            times = [e["converge_s"] for e in entries if e["converge_s"] is not None]
            figure(
                name,
                "converge_s_median",
                round(statistics.median(times), 3) if times else "NOT CONVERGED",
                "s" if times else "",
                runs=len(entries),
                converged=len(times),
                max_s=max(times or [0]),
                lost=sum(e["lost"] for e in entries),
                expected=sum(e["expected"] for e in entries),
                wrong_after_max=max(e["wrong_after"] for e in entries),
                after_lost=sum(e["after_lost"] for e in entries),
            )


def _write_logs(group: NodeGroup, folder: str) -> None:
    os.makedirs(folder, exist_ok=True)
    for node in group.nodes:
        with open(os.path.join(folder, f"{node.name}-{node.pid}.log"), "w") as f:
            f.write(node.log + "\n")
    print(f"node logs written to {folder}")


async def _main(reactor: Any, args: argparse.Namespace) -> None:
    redis = RedisServer()
    redis.start()
    group = NodeGroup()
    driver = SioDriver(reactor).start()
    cluster = Cluster(group.start, redis, driver, _mint, SECRET)
    soak = Soak(args, cluster, [f"n{i + 1}" for i in range(args.nodes)])
    try:
        await soak.run()
    finally:
        driver.stop(timeout=10.0)
        await cluster.balancer.stop()
        group.stop_all()
        redis.close()
        if args.logs:
            _write_logs(group, args.logs)
        print("\n" + figures.table(figures.FIGURES))
        if args.json:
            figures.write_json(
                args.json,
                figures.FIGURES,
                command=" ".join(["python -m tests.reliability.soak", *sys.argv[1:]]),
                checks=soak.checks,
                faults=soak.faults,
                segments=soak.segments,
            )
            print(f"figures written to {args.json}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--faults", default="all", help="all, none, or a comma-separated list")
    parser.add_argument("--fault-every", type=float, default=90.0, help="seconds")
    parser.add_argument("--check-every", type=float, default=60.0, help="seconds")
    parser.add_argument("--churn", type=float, default=20.0, help="slot operations per second")
    parser.add_argument(
        "--sync-interval", type=float, default=5.0, help="seconds between a user's syncs"
    )
    parser.add_argument(
        "--steady", type=float, default=0.25, help="fraction of users that never churn"
    )
    parser.add_argument(
        "--direct", type=float, default=0.3, help="share of connects bypassing the balancer"
    )
    parser.add_argument(
        "--ops",
        default=",".join(CHURN_OPS),
        help="churn operations: drop,disconnect,replace,new_device",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--logs", help="write every node's log into this folder at the end")
    args = parser.parse_args(argv)
    if args.faults == "none":
        args.faults = ""
    react(lambda reactor: Deferred.fromCoroutine(_main(reactor, args)))


if __name__ == "__main__":
    main()
