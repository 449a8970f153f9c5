"""Nodes with JSON logs, stopped all at once, and the registry compared with the live clients.

:class:`JsonCaasNode` is :class:`~tests.support.nodes.CaasNode` run with
``twistd --logger=caas_socket.observability.logs.json_observer``, so tests
can look for structured fields (``event="slow_consumer"``) and not only text.
:class:`NodeGroup` starts nodes and stops every one of them by PID, SIGTERM to
all first, so a teardown waits for one drain, not one per node.

:func:`registry_snapshot` reads the whole registry in one ``EVAL``;
:func:`compare` says how it differs from what the clients hold.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from caas_socket.naming import escape
from tests.support.nodes import CaasNode
from tests.support.redis_server import RedisServer

__all__ = [
    "JSON_LOGGER",
    "Diff",
    "JsonCaasNode",
    "Live",
    "NodeGroup",
    "compare",
    "registry_snapshot",
]

JSON_LOGGER = "--logger=caas_socket.observability.logs.json_observer"
PREFIX = "caas:"


class JsonCaasNode(CaasNode):
    """A caas-socket node logging JSON lines (one object per line, every field)."""

    def __init__(self, args: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(args, **kwargs)
        self.argv.insert(self.argv.index("caas-socket"), JSON_LOGGER)

    def events(self, since: int = 0, **fields: Any) -> list[dict[str, Any]]:
        """The logged events (JSON objects) since ``since`` whose fields equal ``fields``."""
        found = []
        for line in self.lines[since:]:
            start = line.find("{")
            if start < 0 or start > 4:  # a journald "<6>" prefix at most
                continue
            try:
                event = json.loads(line[start:])
            except ValueError:
                continue
            if all(event.get(k) == v for k, v in fields.items()):
                found.append(event)
        return found


class NodeGroup:
    """Starts nodes; :meth:`stop_all` stops every one still running, all at once."""

    def __init__(self) -> None:
        self.nodes: list[CaasNode] = []

    def start(self, *args: str, **kwargs: Any) -> JsonCaasNode:
        node = JsonCaasNode(args, **kwargs)
        self.nodes.append(node)
        return node.start()

    def stop_all(self, timeout: float = 6.0) -> None:
        for node in self.nodes:
            if node.running:
                node.terminate()  # SIGCONT + SIGTERM: a paused node stops too
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            try:
                node.wait(max(0.1, deadline - time.monotonic()))
            except Exception:
                node.kill()
            if node.running or node.returncode is None:
                node.kill()


# -- the registry -----------------------------------------------------------------

_SNAPSHOT = """
local out = {}
for _, key in ipairs(redis.call('KEYS', ARGV[1] .. 'conn:*')) do
  for _, value in ipairs(redis.call('HVALS', key)) do
    out[#out + 1] = 'e'
    out[#out + 1] = value
  end
end
for _, key in ipairs(redis.call('KEYS', ARGV[1] .. 'server:*:sockets')) do
  for _, sid in ipairs(redis.call('SMEMBERS', key)) do
    out[#out + 1] = key
    out[#out + 1] = sid
  end
end
return out
"""


@attrs.frozen
class Live:
    """A connection as its client sees it."""

    sid: str
    tenant: str
    user: str
    device: str


@attrs.frozen
class Snapshot:
    """Every entry of the registry, and every socket id of every node's index."""

    entries: tuple[dict[str, Any], ...]
    indexed: frozenset[tuple[str, str]]  # (server key, socket id)

    @property
    def sids(self) -> set[str]:
        return {e["socketId"] for e in self.entries}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def registry_snapshot(redis: RedisServer, prefix: str = PREFIX) -> Snapshot:
    """The registry in one round trip (a read-only script)."""
    raw = redis.command("EVAL", _SNAPSHOT, 0, prefix) or []
    assert isinstance(raw, list)
    entries, indexed = [], set()
    for i in range(0, len(raw), 2):
        kind, value = _text(raw[i]), raw[i + 1]
        if kind == "e":
            entries.append(json.loads(value))
        else:
            indexed.add((kind, _text(value)))
    return Snapshot(tuple(entries), frozenset(indexed))


@attrs.frozen
class Diff:
    """How the registry differs from the live connections (all empty: equal)."""

    ghosts: frozenset[str]  # in the registry, held by no client
    missing: frozenset[str]  # held by a client, not in the registry
    wrong: tuple[str, ...]  # entries whose identity, index or uniqueness is wrong

    @property
    def equal(self) -> bool:
        return not (self.ghosts or self.missing or self.wrong)

    @property
    def count(self) -> int:
        return len(self.ghosts) + len(self.missing) + len(self.wrong)

    def __str__(self) -> str:
        return (
            f"{len(self.ghosts)} ghosts {sorted(self.ghosts)[:5]}, {len(self.missing)} missing"
            f" {sorted(self.missing)[:5]}, wrong: {list(self.wrong)[:5]}"
        )


def compare(snapshot: Snapshot, live: Iterable[Live], prefix: str = PREFIX) -> Diff:
    """Registry against clients: socket ids, (tenant, user, device) and the node indexes."""
    held = {c.sid: c for c in live}
    wrong: list[str] = []
    seen: dict[str, dict[str, Any]] = {}
    for entry in snapshot.entries:
        sid = entry["socketId"]
        if sid in seen:
            wrong.append(f"{sid} registered twice")
        seen[sid] = entry
        client = held.get(sid)
        if client is not None and (entry["tenantId"], entry["userId"], entry["deviceId"]) != (
            client.tenant,
            client.user,
            client.device,
        ):
            wrong.append(f"{sid} registered as {entry} but held by {client}")
    devices = [(e["tenantId"], e["userId"], e["deviceId"]) for e in snapshot.entries]
    if len(set(devices)) != len(devices):
        wrong.append("a device has two entries")
    expected_index = {
        (f"{prefix}server:{escape(e['serverId'])}:sockets", e["socketId"]) for e in snapshot.entries
    }
    wrong += [f"index {key} lacks {sid}" for key, sid in sorted(expected_index - snapshot.indexed)]
    wrong += [
        f"index {key} has stray {sid}" for key, sid in sorted(snapshot.indexed - expected_index)
    ]
    return Diff(
        ghosts=frozenset(set(seen) - set(held)),
        missing=frozenset(set(held) - set(seen)),
        wrong=tuple(wrong),
    )
