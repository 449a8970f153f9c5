"""The API site over real TCP with fake operations: what each route asks for, and refusals."""

from __future__ import annotations

import pytest
import pytest_twisted

from caas_socket.api import load_openapi
from caas_socket.app.commands import Command
from caas_socket.registry.interfaces import Entry
from tests.api.client import T1_KEY
from tests.api.fakes import LocalApi

USER = "/v1/tenants/t1/users/alice"


@pytest_twisted.ensureDeferred
async def test_emit_to_a_user_a_device_and_a_room(api: LocalApi) -> None:
    replies = [
        await api.client.post(f"{USER}/emit", {"event": "msg", "data": {"id": 1}}),
        await api.client.post(f"{USER}/devices/ph%2Fone/emit", {"event": "msg"}),
        await api.client.post("/v1/tenants/t1/rooms/chat%2042/emit", {"event": "m", "data": None}),
    ]
    assert [(r.status, r.json) for r in replies] == [(202, {"accepted": True})] * 3
    assert replies[0].headers["content-type"] == "application/json"
    assert api.ops.sent == [
        Command("emit", "t1", "alice", event="msg", data={"id": 1}),
        Command("emit", "t1", "alice", "ph/one", event="msg"),
        Command("emit", "t1", room="chat 42", event="m"),
    ]


@pytest_twisted.ensureDeferred
async def test_join_and_leave_rooms(api: LocalApi) -> None:
    joined = await api.client.post(f"{USER}/rooms", {"join": ["a", "b", "a"]})
    assert (joined.status, joined.json) == (200, {"rooms": ["a", "b"]})
    # The fake, like a cluster node, removes left rooms later: the answer leaves them out itself.
    changed = await api.client.post(f"{USER}/rooms", {"join": ["c"], "leave": ["a"]})
    assert changed.json == {"rooms": ["b", "c"]}
    device = await api.client.post(f"{USER}/rooms", {"join": ["d"], "deviceId": "phone"})
    assert device.json == {"rooms": ["a", "b", "c"]}  # the user's rooms; the fake never left "a"
    assert [(c.op, c.device_id, c.rooms) for c in api.ops.sent] == [
        ("join", None, ("a", "b")),
        ("join", None, ("c",)),
        ("leave", None, ("a",)),
        ("join", "phone", ("d",)),
    ]
    listed = await api.client.get(f"{USER}/rooms")
    assert (listed.status, listed.json) == (200, {"rooms": ["a", "b", "c"]})
    assert (await api.client.post(f"{USER}/rooms", {})).json == {"rooms": ["a", "b", "c"]}


@pytest_twisted.ensureDeferred
async def test_too_many_rooms_is_a_conflict_and_changes_nothing(api: LocalApi) -> None:
    await api.client.post(f"{USER}/rooms", {"join": ["a", "b"]})
    sent = len(api.ops.sent)
    refused = await api.client.post(f"{USER}/rooms", {"join": ["c", "d"], "leave": ["a"]})
    assert (refused.status, refused.code) == (409, "too_many_rooms")
    assert len(api.ops.sent) == sent  # not even the leave
    too_long = await api.client.post(f"{USER}/rooms", {"join": [f"r{i}" for i in range(101)]})
    assert (too_long.status, too_long.code) == (422, "invalid_field")
    assert len(api.ops.sent) == sent
    both = await api.client.post(f"{USER}/rooms", {"join": ["x", "b"], "leave": ["x"]})
    assert (both.status, both.json) == (200, {"rooms": ["a", "b"]})  # "x" is left, never joined
    assert [(c.op, c.rooms) for c in api.ops.sent[sent:]] == [("join", ("b",)), ("leave", ("x",))]


@pytest_twisted.ensureDeferred
async def test_disconnect_modes(api: LocalApi) -> None:
    for body in (
        {"reason": "logout", "mode": "stay-out"},
        {"reason": "", "mode": "reconnect", "deviceId": "phone"},
    ):
        assert (await api.client.post(f"{USER}/disconnect", body)).status == 202
    assert api.ops.sent == [
        Command("disconnect", "t1", "alice", reason="logout", reconnect=False),
        Command("disconnect", "t1", "alice", "phone", reason="", reconnect=True),
    ]


@pytest_twisted.ensureDeferred
async def test_connections_and_presence(api: LocalApi) -> None:
    entry = Entry("sid1", "alice", "t1", "phone", "n2", 1000, 2000)
    api.ops.entries[("t1", "alice")] = [entry]
    listed = await api.client.get(f"{USER}/connections")
    assert listed.json == {
        "connections": [
            {
                "socketId": "sid1",
                "deviceId": "phone",
                "serverId": "n2",
                "connectedAt": 1000,
                "lastActivity": 2000,
            }
        ]
    }
    assert (await api.client.get("/v1/tenants/t1/users/bob/connections")).json == {
        "connections": []
    }
    presence = await api.client.post("/v1/tenants/t1/presence", {"userIds": ["a", "b", "a"]})
    assert presence.json == {
        "presence": [
            {"userId": "a", "status": "offline", "devices": [], "version": 0},
            {"userId": "b", "status": "offline", "devices": [], "version": 0},
        ]
    }


@pytest_twisted.ensureDeferred
async def test_keys_are_checked_before_anything_is_done(api: LocalApi) -> None:
    body = {"event": "msg"}
    for client, path, status, code in [
        (api.client_with(None), f"{USER}/emit", 401, "unauthorized"),
        (api.client_with("wrong-key-wrong-key-wrong"), f"{USER}/emit", 401, "unauthorized"),
        (api.client_with(T1_KEY), "/v1/tenants/t2/users/alice/emit", 403, "forbidden"),
        (api.client_with(T1_KEY), "/v1/tenants/t2/users/alice/connections", 403, "forbidden"),
        (api.client_with(T1_KEY), "/v1/tenants/t2/presence", 403, "forbidden"),
    ]:
        method = "GET" if path.endswith("connections") else "POST"
        reply = await client.request(method, path, None if method == "GET" else body)
        assert (reply.status, reply.code) == (status, code), path
    # Refused before the body is even read: a broken body still gets 401.
    broken = await api.client_with(None).post(f"{USER}/emit", raw=b"{nope")
    assert (broken.status, broken.code) == (401, "unauthorized")
    assert "www-authenticate" in broken.headers
    assert api.ops.sent == []
    allowed = await api.client_with(T1_KEY).post(f"{USER}/emit", body)
    assert allowed.status == 202 and len(api.ops.sent) == 1


@pytest_twisted.ensureDeferred
async def test_description_and_health_need_no_key(api: LocalApi) -> None:
    anonymous = api.client_with(None)
    spec = await anonymous.get("/openapi.json")
    assert (spec.status, spec.body) == (200, load_openapi())
    assert spec.headers["content-type"] == "application/json"
    assert (await anonymous.get("/v1/health")).json == {"status": "ok"}


J = "application/json"
LONG = f"/v1/tenants/t1/users/{'u' * 257}"


@pytest.mark.parametrize(
    ("path", "raw", "content_type", "status", "code"),
    [
        (f"{USER}/emit", b'{"event":', J, 400, "invalid_json"),
        (f"{USER}/emit", b"", J, 400, "invalid_json"),
        (f"{USER}/emit", b'{"event":"m","data":NaN}', J, 400, "invalid_json"),
        (f"{USER}/emit", b'{"event":"m","data":"\\ud800"}', J, 400, "invalid_json"),
        (f"{USER}/emit", b'{"event":"\xff"}', J, 400, "invalid_json"),
        (f"{USER}/emit", b"[" * 100_000, J, 413, "body_too_large"),
        (f"{USER}/emit", b'{"event":"m"}', "text/plain", 415, "unsupported_media_type"),
        (f"{USER}/emit", b'{"event":"m"}', None, 415, "unsupported_media_type"),
        (f"{USER}/emit", b"[]", J, 422, "invalid_body"),
        (f"{USER}/emit", b"{}", J, 422, "missing_field"),
        (f"{USER}/emit", b'{"event":"m","dat":1}', J, 422, "unknown_field"),
        (f"{USER}/emit", b'{"event":"disconnect"}', J, 422, "invalid_field"),
        (f"{USER}/emit", b'{"event":""}', J, 422, "invalid_field"),
        (f"{USER}/emit", b'{"event":7}', J, 422, "invalid_field"),
        (f"{LONG}/emit", b'{"event":"m"}', J, 422, "invalid_field"),
        (f"{USER}/disconnect", b'{"reason":"x","mode":"later"}', J, 422, "invalid_field"),
        (f"{USER}/disconnect", b'{"reason":null,"mode":"reconnect"}', J, 422, "invalid_field"),
        (f"{USER}/disconnect", b'{"mode":"reconnect"}', J, 422, "missing_field"),
        (f"{USER}/rooms", b'{"join":"a"}', J, 422, "invalid_field"),
        (f"{USER}/rooms", b'{"join":null}', J, 422, "invalid_field"),
        (f"{USER}/rooms", b'{"leave":[""]}', J, 422, "invalid_field"),
        (f"{USER}/rooms", b'{"deviceId":5}', J, 422, "invalid_field"),
        ("/v1/tenants/t1/presence", b'{"userIds":[]}', J, 422, "invalid_field"),
        ("/v1/tenants/t1/presence", b'{"userIds":"a"}', J, 422, "invalid_field"),
        ("/v1/tenants/t1/presence", b'{"userIds":[1]}', J, 422, "invalid_field"),
        ("/v1/tenants/%FF/presence", b'{"userIds":["a"]}', J, 400, "invalid_path"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_requests_get_json_errors_and_do_nothing(
    api: LocalApi, path: str, raw: bytes, content_type: str | None, status: int, code: str
) -> None:
    reply = await api.client.post(path, raw=raw, content_type=content_type)
    assert (reply.status, reply.code) == (status, code), reply.json
    assert set(reply.json["error"]) == {"code", "message"}
    assert api.ops.sent == []


@pytest_twisted.ensureDeferred
async def test_presence_of_at_most_100_users(api: LocalApi) -> None:
    ids = [f"u{i}" for i in range(101)]
    reply = await api.client.post("/v1/tenants/t1/presence", {"userIds": ids})
    assert (reply.status, reply.code) == (422, "invalid_field")
    assert (await api.client.post("/v1/tenants/t1/presence", {"userIds": ids[:100]})).status == 200


@pytest_twisted.ensureDeferred
async def test_unknown_routes_and_methods(api: LocalApi) -> None:
    missing = await api.client.get("/v1/tenants/t1/users/alice")
    assert (missing.status, missing.code) == (404, "not_found")
    empty_id = await api.client.post("/v1/tenants//users/alice/emit", {"event": "m"})
    assert (empty_id.status, empty_id.code) == (404, "not_found")
    wrong = await api.client.request("PUT", f"{USER}/rooms", {"join": ["a"]})
    assert (wrong.status, wrong.code, wrong.headers["allow"]) == (
        405,
        "method_not_allowed",
        "GET, POST",
    )
    get_emit = await api.client.get(f"{USER}/emit")
    assert (get_emit.status, get_emit.headers["allow"]) == (405, "POST")
    assert api.ops.sent == []
