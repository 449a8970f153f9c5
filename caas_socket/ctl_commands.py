"""The subcommands of ``caas-socketctl`` that talk to Redis, and how they print.

Each is ``async def (context, args) -> exit status``: 0 done, 1 failed (the
message on stderr), 3 ``check`` found problems it left in place.  With
``--json`` the result goes to stdout as one JSON document; messages for
humans go to stderr either way, so a script can parse stdout as it is.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import attrs

from .client import TwistedCommandClient
from .ctl_check import CheckReport, check_registry
from .ctl_registry import NodeState, RegistryInspector, entry_json
from .registry.interfaces import Entry

__all__ = [
    "PROBLEMS",
    "Context",
    "ago",
    "check",
    "count",
    "devices",
    "emit",
    "emit_room",
    "kick",
    "nodes",
    "table",
]

#: Exit status of ``check`` when it found (and left) stale entries or inconsistencies.
PROBLEMS = 3


@attrs.frozen
class Context:
    """What every subcommand needs, built once by :mod:`caas_socket.ctl`."""

    inspector: RegistryInspector
    client: TwistedCommandClient
    json: bool
    now_ms: int
    out: TextIO = sys.stdout
    err: TextIO = sys.stderr

    def emit(self, human: str, data: Any) -> None:
        """Print the result: ``human`` text, or ``data`` as JSON with ``--json``."""
        if self.json:
            print(json.dumps(data, ensure_ascii=False, sort_keys=False), file=self.out)
        else:
            print(human, file=self.out)


def ago(ms: int, now_ms: int) -> str:
    """``2026-11-26 06:40:01Z (12s ago)``: absolute for logs, relative for humans."""
    when = datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC)
    seconds = max(0, now_ms - ms) // 1000
    if seconds < 120:
        relative = f"{seconds}s"
    elif seconds < 7200:
        relative = f"{seconds // 60}m"
    elif seconds < 172800:
        relative = f"{seconds // 3600}h"
    else:
        relative = f"{seconds // 86400}d"
    return f"{when:%Y-%m-%d %H:%M:%S}Z ({relative} ago)"


def count(n: int, word: str) -> str:
    """``1 entry``, ``2 entries``, ``1 node``: the few plurals this tool prints."""
    if n == 1:
        return f"1 {word}"
    return f"{n} {word[:-1]}ies" if word.endswith("y") else f"{n} {word}s"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, two spaces apart: readable, and easy to ``awk``."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


# -- devices -------------------------------------------------------------------


async def devices(ctx: Context, args: argparse.Namespace) -> int:
    entries = sorted(
        await ctx.inspector.registry.user_entries(args.tenant, args.user),
        key=lambda e: (e.connected_at, e.device_id),
    )
    alive = await ctx.inspector.lease_alive(e.server_id for e in entries)
    rows = [
        [
            e.device_id,
            e.socket_id,
            e.server_id,
            ago(e.connected_at, ctx.now_ms),
            ago(e.last_activity, ctx.now_ms),
            "alive" if alive[e.server_id] else "EXPIRED",
        ]
        for e in entries
    ]
    who = f"{args.tenant}/{args.user}"
    header = ["DEVICE", "SOCKET", "NODE", "CONNECTED", "LAST ACTIVITY", "NODE LEASE"]
    human = f"{who}: {count(len(entries), 'connection')}"
    if rows:
        human += "\n" + table(header, rows)
    devices_json = [{**entry_json(e), "nodeAlive": alive[e.server_id]} for e in entries]
    ctx.emit(human, {"tenantId": args.tenant, "userId": args.user, "devices": devices_json})
    return 0


# -- commands through the channel ------------------------------------------------


async def _published(ctx: Context, what: str, raw: dict[str, Any]) -> int:
    receivers = await ctx.client.send(raw)
    channel = ctx.client.channel.decode("utf-8", "surrogatepass")
    command = {"v": 1, **{k: v for k, v in raw.items() if v is not None}}
    ctx.emit(
        f"{what}: received by {count(receivers, 'node')} on {channel}",
        {"channel": channel, "receivers": receivers, "command": command},
    )
    if receivers == 0:
        print(
            f"caas-socketctl: nobody listens on {channel}: no node is running with this"
            " --redis and --redis-prefix, so nothing happened",
            file=ctx.err,
        )
        return 1
    return 0


async def kick(ctx: Context, args: argparse.Namespace) -> int:
    target = f"{args.tenant}/{args.user}" + (f" device {args.device}" if args.device else "")
    how = "may reconnect" if args.reconnect else "stays away"
    return await _published(
        ctx,
        f"disconnect {target} (reason {args.reason!r}, {how})",
        {
            "op": "disconnect",
            "tenantId": args.tenant,
            "userId": args.user,
            "deviceId": args.device,
            "reason": args.reason,
            "reconnect": args.reconnect,
        },
    )


async def emit(ctx: Context, args: argparse.Namespace) -> int:
    target = f"{args.tenant}/{args.user}" + (f" device {args.device}" if args.device else "")
    return await _published(
        ctx,
        f"event {args.event!r} to {target}",
        {
            "op": "emit",
            "tenantId": args.tenant,
            "userId": args.user,
            "deviceId": args.device,
            "event": args.event,
            "data": args.data,
        },
    )


async def emit_room(ctx: Context, args: argparse.Namespace) -> int:
    return await _published(
        ctx,
        f"event {args.event!r} to room {args.tenant}/{args.room}",
        {
            "op": "emit",
            "tenantId": args.tenant,
            "room": args.room,
            "event": args.event,
            "data": args.data,
        },
    )


# -- nodes and check -------------------------------------------------------------


def _node_rows(nodes: Sequence[NodeState]) -> str:
    rows = [
        [
            n.server_id,
            n.lease,
            f"{n.ttl_ms / 1000:.1f}s" if n.ttl_ms is not None else "-",
            (n.generation or "-")[:8],
            str(n.entries),
            str(n.reaping),
        ]
        for n in nodes
    ]
    return table(["NODE", "LEASE", "TTL LEFT", "GENERATION", "ENTRIES", "REAPING"], rows)


async def nodes(ctx: Context, args: argparse.Namespace) -> int:
    found = await ctx.inspector.nodes()
    alive = sum(n.lease == "alive" for n in found)
    human = f"{count(len(found), 'node')}, {alive} alive"
    if found:
        human += "\n" + _node_rows(found)
    ctx.emit(human, {"nodes": [n.to_json() for n in found]})
    return 0


def _entry_line(e: Entry, now_ms: int) -> str:
    return (
        f"    {e.tenant_id}/{e.user_id} device {e.device_id} socket {e.socket_id}"
        f" (connected {ago(e.connected_at, now_ms)})"
    )


def _report_lines(report: CheckReport, now_ms: int) -> list[str]:
    alive = sum(n.lease == "alive" for n in report.nodes)
    lines = [f"{count(len(report.nodes), 'node')}, {alive} alive"]
    if report.nodes:
        lines.append(_node_rows(report.nodes))
    if report.stale:
        lines.append("stale (their node's lease expired):")
    for server_id, entries in report.stale.items():
        lines.append(f"  node {server_id}: {count(len(entries), 'entry')}")
        lines += [_entry_line(e, now_ms) for e in entries]
    if report.findings:
        lines.append("inconsistencies (not repaired by --purge; see docs/REDIS.rst):")
    lines += [f"  {f.kind} node {f.server_id}: {f.detail}" for f in report.findings]
    if report.clean:
        lines.append("registry consistent: no stale entries, no inconsistencies")
    return lines


def _report_json(report: CheckReport) -> dict[str, Any]:
    return {
        "nodes": [n.to_json() for n in report.nodes],
        "stale": [
            {"serverId": sid, "entries": [entry_json(e) for e in entries]}
            for sid, entries in report.stale.items()
        ],
        "inconsistencies": [f.to_json() for f in report.findings],
        "clean": report.clean,
    }


async def check(ctx: Context, args: argparse.Namespace) -> int:
    before = await check_registry(ctx.inspector)
    lines = _report_lines(before, ctx.now_ms)
    result: dict[str, Any] = {"before": _report_json(before), "purged": None, "after": None}
    after = before
    if not args.purge:
        if before.stale:
            entries = sum(len(e) for e in before.stale.values())
            lines.append(
                f"dry run, nothing changed: --purge would reap {count(len(before.stale), 'node')}"
                f" ({count(entries, 'entry')})"
            )
    else:
        purged = await ctx.inspector.purge()
        result["purged"] = [
            {"serverId": sid, "removed": [entry_json(e) for e in gone]}
            for sid, gone in purged.items()
        ]
        lines += [
            f"purged node {sid}: {count(len(gone), 'entry')} removed"
            for sid, gone in purged.items()
        ]
        if not purged:
            lines.append("purged nothing: no node's lease had expired")
        after = await check_registry(ctx.inspector)
        result["after"] = _report_json(after)
        lines += ["after the purge:", *_report_lines(after, ctx.now_ms)]
    ctx.emit("\n".join(lines), result)
    return 0 if after.clean else PROBLEMS
