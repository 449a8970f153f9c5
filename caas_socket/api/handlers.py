"""What each route does: check its body as strictly as the OpenAPI schema says, then act.

Commands go through :func:`~caas_socket.app.commands.parse_command`, the same
validation as commands arriving on the Redis channel, so the HTTP API cannot
accept anything a node would refuse.  Bodies are checked field by field
before anything is sent: a refused request has done nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..app.commands import MAX_ROOMS, Command, parse_command
from ..app.operations import Operations
from ..app.presence import MAX_QUERY
from .errors import ApiError
from .routes import Match

__all__ = ["MAX_ID", "ApiHandlers", "Reply"]

#: Longest id (tenant, user, device, room), as in commands.
MAX_ID = 256
#: A status and either a JSON value or an already encoded JSON body.
Reply = tuple[int, Any]
_ACCEPTED: Reply = (202, {"accepted": True})
_MODES = ("reconnect", "stay-out")


def _invalid(message: str, code: str = "invalid_field") -> ApiError:
    return ApiError(422, code, message)


def _fields(body: Any, required: Sequence[str], optional: Sequence[str] = ()) -> dict[str, Any]:
    """``body`` as an object with exactly the allowed fields (typos are errors, not ignored)."""
    if not isinstance(body, dict):
        raise _invalid("the body is a JSON object", "invalid_body")
    for name in body:
        if name not in required and name not in optional:
            allowed = ", ".join([*required, *optional])
            raise _invalid(f"unknown field (allowed: {allowed})", "unknown_field")
    for name in required:
        if name not in body:
            raise _invalid(f"{name} is required", "missing_field")
    return body


def _ident(value: Any, name: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID:
        raise _invalid(f"{name} is a string of 1..{MAX_ID} characters")
    return value


def _optional_ident(body: dict[str, Any], name: str) -> str | None:
    return _ident(body[name], name) if name in body else None


def _idents(body: dict[str, Any], name: str, minimum: int, maximum: int) -> list[str]:
    values = body.get(name, [])
    if not isinstance(values, list) or not minimum <= len(values) <= maximum:
        raise _invalid(f"{name} is a list of {minimum}..{maximum} strings")
    return list(dict.fromkeys(_ident(v, f"each of {name}") for v in values))


def _command(**fields: Any) -> Command:
    """A validated command; ``None`` fields are left out."""
    return parse_command({"v": 1, **{k: v for k, v in fields.items() if v is not None}})


class ApiHandlers:
    """One coroutine per route (named by :attr:`Route.handler`), over :class:`Operations`."""

    def __init__(self, operations: Operations, openapi: bytes) -> None:
        self._ops = operations
        self._openapi = openapi

    async def dispatch(self, match: Match, body: Any) -> Reply:
        for name, value in match.params.items():
            _ident(value, name)
        handler = getattr(self, match.route.handler)
        reply: Reply = await handler(match.params, body)
        return reply

    # -- commands ---------------------------------------------------------------

    async def _emit(self, body: Any, **target: str) -> Reply:
        fields = _fields(body, ("event",), ("data",))
        command = _command(op="emit", event=fields["event"], data=fields.get("data"), **target)
        await self._ops.send(command)
        return _ACCEPTED

    async def emit_user(self, p: dict[str, str], body: Any) -> Reply:
        return await self._emit(body, tenantId=p["tenant"], userId=p["user"])

    async def emit_device(self, p: dict[str, str], body: Any) -> Reply:
        return await self._emit(body, tenantId=p["tenant"], userId=p["user"], deviceId=p["device"])

    async def emit_room(self, p: dict[str, str], body: Any) -> Reply:
        return await self._emit(body, tenantId=p["tenant"], room=p["room"])

    async def change_rooms(self, p: dict[str, str], body: Any) -> Reply:
        """Join, then leave (a room in both is left); answer the user's rooms after the change.

        Joining is checked against the user's room limit before anything is
        published (409 ``too_many_rooms``, nothing changed).  A user-wide leave
        is applied by every node as the command reaches it, possibly after this
        answer, so the answer leaves those rooms out itself.
        """
        fields = _fields(body, (), ("join", "leave", "deviceId"))
        join = _idents(fields, "join", 0, MAX_ROOMS)
        leave = _idents(fields, "leave", 0, MAX_ROOMS)
        device = _optional_ident(fields, "deviceId")
        join = [room for room in join if room not in leave]  # in both: left, as if in order
        target = {"tenantId": p["tenant"], "userId": p["user"], "deviceId": device}
        commands = [
            _command(op=op, rooms=rooms, **target)
            for op, rooms in (("join", join), ("leave", leave))
            if rooms
        ]
        for command in commands:
            await self._ops.send(command)
        rooms = await self._ops.user_rooms(p["tenant"], p["user"])
        if leave and device is None:
            rooms = [room for room in rooms if room not in set(leave)]
        return 200, {"rooms": rooms}

    async def disconnect(self, p: dict[str, str], body: Any) -> Reply:
        fields = _fields(body, ("reason", "mode"), ("deviceId",))
        if fields["mode"] not in _MODES:
            raise _invalid("mode is reconnect or stay-out")
        if not isinstance(fields["reason"], str):
            raise _invalid("reason is a string")
        command = _command(
            op="disconnect",
            tenantId=p["tenant"],
            userId=p["user"],
            deviceId=_optional_ident(fields, "deviceId"),
            reason=fields["reason"],
            reconnect=fields["mode"] == "reconnect",
        )
        await self._ops.send(command)
        return _ACCEPTED

    # -- queries ----------------------------------------------------------------

    async def list_rooms(self, p: dict[str, str], body: Any) -> Reply:
        return 200, {"rooms": await self._ops.user_rooms(p["tenant"], p["user"])}

    async def connections(self, p: dict[str, str], body: Any) -> Reply:
        entries = await self._ops.connections(p["tenant"], p["user"])
        return 200, {
            "connections": [
                {
                    "socketId": e.socket_id,
                    "deviceId": e.device_id,
                    "serverId": e.server_id,
                    "connectedAt": e.connected_at,
                    "lastActivity": e.last_activity,
                }
                for e in entries
            ]
        }

    async def presence(self, p: dict[str, str], body: Any) -> Reply:
        fields = _fields(body, ("userIds",))
        user_ids = _idents(fields, "userIds", 1, MAX_QUERY)
        states = await self._ops.presence(p["tenant"], user_ids)
        return 200, {"presence": [state.to_client() for state in states]}

    # -- unauthenticated --------------------------------------------------------

    async def openapi(self, p: dict[str, str], body: Any) -> Reply:
        return 200, self._openapi

    async def health(self, p: dict[str, str], body: Any) -> Reply:
        return 200, {"status": "ok"}
