"""Tenant isolation with ids designed to collide: nothing of one tenant reaches another.

Users whose ids would share a name if joined naively (tenant ``a:b`` user
``c`` and tenant ``a`` user ``b:c``), ids that look escaped already
(``a%3Ab``), and Unicode look-alikes (``é`` composed and decomposed) each
have a device on two nodes.  Sync, commands to a user, a device or a room,
presence changes and queries, and the HTTP API must each reach exactly the
intended user of the intended tenant.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest_twisted

from caas_socket.client import CommandClient
from tests.api.client import FULL_KEY, KEYS_TEXT, T1_KEY, ApiClient
from tests.cluster.conftest import Cluster
from tests.reliability.figures import figure
from tests.reliability.scenario import sleep

USERS = {
    "A": ("a:b", "c"),
    "B": ("a", "b:c"),
    "C": ("a%3Ab", "c"),
    "D": ("a", "b%3Ac"),
    "E": ("\u00e9", "\u00fc"),
    "F": ("e\u0301", "\u00fc"),
    "G": ("a", "c"),
}
QUIET = 0.8


def _path(*ids: str) -> str:
    return "/".join(quote(i, safe="") for i in ids)


@pytest_twisted.ensureDeferred
async def test_ids_designed_to_collide_stay_apart(cluster: Cluster, tmp_path: Path) -> None:
    keys = tmp_path / "api-keys"
    keys.write_text(KEYS_TEXT)
    keys.chmod(0o600)
    n1, n2 = await cluster.start(
        "n1", "n2", args=("--api-listen", "tcp:0:interface=127.0.0.1", "--api-key-file", str(keys))
    )
    sio = cluster.sio
    for name, (tenant, user) in USERS.items():
        await cluster.connected(f"{name}1", n1.url, user, "d1", tenant=tenant)
        await cluster.connected(f"{name}2", n2.url, user, "d2", tenant=tenant)
    await cluster.connected("watch-ab", n1.url, "watcher", "w", tenant="a:b")
    await cluster.connected("watch-a", n2.url, "watcher", "w", tenant="a")
    clients = [f"{n}{d}" for n in USERS for d in (1, 2)]
    leaks: list[str] = []

    def only(event: str, expected: dict[str, list[object]]) -> None:
        for client in [*clients, "watch-ab", "watch-a"]:
            got = [e["args"] for e in sio.seen(client, event)]
            want = expected.get(client, [])
            if got != want:
                leaks.append(f"{event} at {client}: got {got}, expected {want}")

    # 1. sync: each device to the other device of its own user, across nodes.
    for name in USERS:
        sio.emit(f"{name}1", "sync", {"from": f"{name}1"})
    await sleep(QUIET)
    only("sync", {f"{n}2": [[{"from": f"{n}1"}]] for n in USERS})

    # 2. commands to a user, to one device, to a room; then room names that collide.
    with CommandClient(cluster.redis.url) as commands:
        for name, (tenant, user) in USERS.items():
            commands.emit_to_user(tenant, user, "to-user", name)
            commands.emit_to_device(tenant, user, "d2", "to-device", name)
        commands.join("a:b", "c", ["c"])  # room:a%3Ab:c
        commands.join("a", "b:c", ["b:c"])  # room:a:b%3Ac, the same name joined naively
        commands.join("\u00e9", "\u00fc", ["r"])
        commands.join("e\u0301", "\u00fc", ["r"])
        await sleep(0.3)
        commands.emit_to_room("a", "b:c", "to-room", "a/b:c")
        commands.emit_to_room("a:b", "c", "to-room", "a:b/c")
        commands.emit_to_room("\u00e9", "r", "to-room", "e-acute/r")
        commands.emit_to_room("a", "c", "to-room", "nobody")  # no such room in tenant a
    await sleep(QUIET)
    only("to-user", {f"{n}{d}": [[n]] for n in USERS for d in (1, 2)})
    only("to-device", {f"{n}2": [[n]] for n in USERS})
    only(
        "to-room",
        {
            "A1": [["a:b/c"]],
            "A2": [["a:b/c"]],
            "B1": [["a/b:c"]],
            "B2": [["a/b:c"]],
            "E1": [["e-acute/r"]],
            "E2": [["e-acute/r"]],
        },
    )

    # 3. presence: watchers of tenant a:b and of tenant a both follow user "c".
    for watcher in ("watch-ab", "watch-a"):
        ack = await sio.ack(
            watcher, sio.emit(watcher, "presence:subscribe", {"userIds": ["c", "b:c"]}, ack=True)
        )
        assert ack == [{"subscribed": 2}]
    sio.disconnect("A1")  # tenant a:b, user c: one device leaves (and comes back)
    await cluster.presence_change("watch-ab", "c", "offline", 5.0, device="d1")
    sio.open("A1")
    await sio.wait_for("A1", "connect", 3.0)
    await cluster.presence_change("watch-ab", "c", "online", 5.0, device="d1")
    sio.disconnect("G1")
    sio.disconnect("G2")  # tenant a, user c goes offline
    await cluster.presence_change("watch-a", "c", "offline", 5.0)
    await sleep(QUIET)
    by_watcher = {
        w: {
            (p["args"][0]["userId"], p["args"][0]["deviceId"], p["args"][0]["status"])
            for p in sio.seen(w, "presence")
        }
        for w in ("watch-ab", "watch-a")
    }
    if by_watcher["watch-ab"] != {("c", "d1", "offline"), ("c", "d1", "online")}:
        leaks.append(f"presence at watch-ab: {sorted(by_watcher['watch-ab'])}")
    if by_watcher["watch-a"] != {
        ("c", "d1", "offline"),
        ("c", "d2", "offline"),
        ("c", None, "offline"),
    }:
        leaks.append(f"presence at watch-a: {sorted(by_watcher['watch-a'])}")
    got = await sio.ack(
        "watch-a",
        sio.emit("watch-a", "presence:get", {"userIds": ["c", "b:c", "watcher"]}, ack=True),
    )
    states = {s["userId"]: (s["status"], s["devices"]) for s in got[0]}
    if states != {
        "c": ("offline", []),
        "b:c": ("online", ["d1", "d2"]),
        "watcher": ("online", ["w"]),
    }:
        leaks.append(f"presence:get in tenant a: {states}")

    # 4. the HTTP API: queries per tenant, and a key limited to tenant t1.
    api_port = n1.find(r"api listening on [0-9.]+:(\d+)")[1]
    api = ApiClient(f"http://127.0.0.1:{api_port}", FULL_KEY)
    limited = ApiClient(f"http://127.0.0.1:{api_port}", T1_KEY)
    try:
        for name, (tenant, user) in USERS.items():
            if name == "G":
                continue
            reply = await api.get(f"/v1/tenants/{_path(tenant, 'users', user)}/connections")
            devices = sorted(c["deviceId"] for c in reply.json["connections"])
            if devices != ["d1", "d2"]:
                leaks.append(f"API connections of {name}: {reply.json}")
        reply = await api.get(f"/v1/tenants/{_path('a', 'users', 'c')}/connections")
        if reply.json["connections"]:
            leaks.append(f"API connections of a/c (disconnected): {reply.json}")
        refused = await limited.post(
            f"/v1/tenants/{_path('a', 'users', 'b:c')}/emit", {"event": "x"}
        )
        if refused.status != 403:
            leaks.append(f"a key for t1 acted for tenant a: {refused.status} {refused.body!r}")
        presence = await api.post(f"/v1/tenants/{_path('a:b')}/presence", {"userIds": ["c", "b:c"]})
        statuses = {p["userId"]: p["status"] for p in presence.json["presence"]}
        if statuses != {"c": "online", "b:c": "offline"}:
            leaks.append(f"API presence of tenant a:b: {statuses}")
        # 5. a disconnect of one tenant's user leaves the look-alikes alone.
        await api.post(
            f"/v1/tenants/{_path('a', 'users', 'b:c')}/disconnect",
            {"reason": "test", "mode": "stay-out"},
        )
    finally:
        await api.close()
        await limited.close()
    await sleep(QUIET)
    gone = sorted(c for c in clients if sio.seen(c, "caas:kicked"))
    if gone != ["B1", "B2"]:
        leaks.append(f"disconnect of a/b:c ended {gone}")
    figure(
        "tenant-isolation",
        "leaks",
        len(leaks),
        "",
        identities=len(USERS),
        checks="sync, user/device/room emits, presence, API, disconnect",
    )
    assert not leaks, "\n".join(leaks)
