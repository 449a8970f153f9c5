"""``caas-socketctl check``: the registry compared with the live nodes.

Two kinds of trouble.  *Stale* entries belong to a node whose lease expired:
a node's sweeper reaps them within about a quarter of a lease, and
``check --purge`` does the same at once, with the same fenced script.
*Inconsistencies* are what no reap repairs: a socket in a node's set whose
entry is gone, or an entry that no node's set holds (nobody would ever reap
it).  They point at a bug or at hand edits, so they are reported, never
"fixed" by a hand-written delete.

Nodes keep writing while the check reads, so a suspect is read a second time
and reported only if it is still inconsistent.
"""

from __future__ import annotations

from typing import Any

import attrs

from .ctl_registry import NodeState, RegistryInspector, pairs, text
from .naming import escape
from .registry.interfaces import Entry

__all__ = ["CheckReport", "Finding", "check_registry"]

_GLOB = str.maketrans({c: "\\" + c for c in "*?[]\\"})


@attrs.frozen
class Finding:
    """One inconsistency: ``dangling_socket``, ``orphan_entry`` or ``lease_mismatch``."""

    kind: str
    server_id: str
    socket_id: str | None
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "serverId": self.server_id,
            "socketId": self.socket_id,
            "detail": self.detail,
        }


@attrs.frozen
class CheckReport:
    """What one pass found."""

    nodes: list[NodeState]
    #: Entries of nodes whose lease expired, by server id.
    stale: dict[str, list[Entry]]
    findings: list[Finding]

    @property
    def clean(self) -> bool:
        return not self.stale and not self.findings


async def check_registry(inspector: RegistryInspector) -> CheckReport:
    """Stale entries and inconsistencies, read without changing anything."""
    nodes = await inspector.nodes()
    stale_nodes = [n for n in nodes if n.stale]
    stale_entries = await inspector.gather(
        inspector.registry.server_entries(n.server_id) for n in stale_nodes
    )
    stale = {n.server_id: e for n, e in zip(stale_nodes, stale_entries, strict=True)}
    findings = [
        Finding("lease_mismatch", n.server_id, None, f"lease {n.generation}, record {n.record}")
        for n in nodes
        if n.lease == "alive" and n.record != n.generation
    ]
    sockets = {}
    for node in nodes:
        members = await inspector.scan("SSCAN", inspector.key("server", node.escaped, "sockets"))
        sockets[node.server_id] = {text(m) for m in members}
    findings += await _dangling(inspector, nodes, sockets)
    findings += await _orphans(inspector, sockets)
    return CheckReport(nodes, stale, findings)


async def _entry_of(inspector: RegistryInspector, ref: bytes | None) -> Entry | None:
    """The entry a ``refs`` value points at (``conn:{tenant}:{user}`` LF device)."""
    if ref is None:
        return None
    key, _, device = text(ref).partition("\n")
    raw = await inspector.call("HGET", inspector.key(key), device.encode("utf-8", "surrogatepass"))
    try:
        return Entry.from_json(raw) if raw is not None else None
    except ValueError:
        return None


async def _dangling(
    inspector: RegistryInspector, nodes: list[NodeState], sockets: dict[str, set[str]]
) -> list[Finding]:
    """Sockets in a node's set whose entry is not (or no longer) theirs."""
    found = []
    for node in nodes:
        refs_key = inspector.key("server", node.escaped, "refs")
        refs = pairs(await inspector.scan("HSCAN", refs_key))
        for socket_id in sorted(sockets[node.server_id]):
            entry = await _entry_of(inspector, refs.get(socket_id))
            if entry is not None and entry.socket_id == socket_id:
                continue
            # Read again: the socket may have been unregistered meanwhile.
            ref = await inspector.call("HGET", refs_key, socket_id)
            entry = await _entry_of(inspector, ref)
            members = inspector.key("server", node.escaped, "sockets")
            if (entry is not None and entry.socket_id == socket_id) or not await inspector.call(
                "SISMEMBER", members, socket_id
            ):
                continue
            where = text(ref).replace("\n", " device ") if ref is not None else "no ref"
            detail = f"in the node's sockets set, but its entry ({where}) is gone"
            found.append(Finding("dangling_socket", node.server_id, socket_id, detail))
    return found


async def _orphans(inspector: RegistryInspector, sockets: dict[str, set[str]]) -> list[Finding]:
    """Entries that no node's sockets set holds: no reap would ever remove them."""
    pattern = inspector.key("").decode("utf-8", "surrogatepass").translate(_GLOB) + "conn:*"
    cursor, found = b"0", []
    while True:
        cursor, keys = await inspector.call("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
        for key in keys:
            for device, raw in pairs(await inspector.call("HGETALL", key)).items():
                finding = await _orphan(inspector, key, device, raw, sockets)
                if finding is not None:
                    found.append(finding)
        if cursor in (b"0", "0"):
            return found


async def _orphan(
    inspector: RegistryInspector,
    key: bytes,
    device: str,
    raw: bytes,
    sockets: dict[str, set[str]],
) -> Finding | None:
    try:
        entry = Entry.from_json(raw)
    except ValueError:
        detail = f"{text(key)} device {device}: unreadable entry {raw[:80]!r}"
        return Finding("orphan_entry", "?", None, detail)
    if entry.socket_id in sockets.get(entry.server_id, ()):
        return None
    # Read again: the entry may have been written after we read the sets.
    members = inspector.key("server", escape(entry.server_id), "sockets")
    member = await inspector.call("SISMEMBER", members, entry.socket_id)
    still = await inspector.call("HGET", key, device.encode("utf-8", "surrogatepass"))
    if member or still != raw:
        return None
    unknown = "" if entry.server_id in sockets else " (a node the registry does not know)"
    who = f"{entry.tenant_id}/{entry.user_id} device {entry.device_id}"
    detail = f"{who}: not in the sockets set of its node{unknown}"
    return Finding("orphan_entry", entry.server_id, entry.socket_id, detail)
