"""Commands other services send to reach users: the format, version 1.

A command is a JSON object.  It reaches every node (on the Redis channel
``{prefix}api``, or directly on a single node) and every node applies it to
its own connections, so one publish reaches a user's devices, or a room's
members, on all nodes at once::

    {"v":1,"op":"emit","tenantId":"acme","userId":"alice","event":"msg","data":{...}}
    {"v":1,"op":"emit","tenantId":"acme","userId":"alice","deviceId":"phone","event":...}
    {"v":1,"op":"emit","tenantId":"acme","room":"chat-42","event":"msg","data":...}
    {"v":1,"op":"join","tenantId":"acme","userId":"alice","rooms":["chat-42"]}
    {"v":1,"op":"leave","tenantId":"acme","userId":"alice","deviceId":"phone","rooms":[...]}
    {"v":1,"op":"disconnect","tenantId":"acme","userId":"alice","reason":"logout",
     "reconnect":false}

``data`` is any JSON value; without it the event has no argument.  Joining a
user (without ``deviceId``) also makes the user's future connections join,
until they leave; joining a device affects its current connection only.
``reconnect: false`` ends the connection with ``caas:kicked`` and a Socket.IO
DISCONNECT (the client stays away); ``true`` closes the transport (the client
reconnects).  Every id is scoped by ``tenantId``: no command can reach another
tenant's users.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

__all__ = [
    "MAX_ROOMS",
    "NO_DATA",
    "Command",
    "CommandError",
    "decode_command",
    "encode_command",
    "parse_command",
]

OPS = ("emit", "join", "leave", "disconnect")


class _NoData:
    """``data`` left out: the event is emitted without an argument (not with null)."""

    def __repr__(self) -> str:
        return "NO_DATA"


NO_DATA: Any = _NoData()
#: Rooms one command may name.
MAX_ROOMS = 100
_ID_MAX = 256
_EVENT_MAX = 128
_RESERVED = frozenset({"connect", "connect_error", "disconnect", "disconnecting"})


class CommandError(ValueError):
    """An invalid command; ``code`` says what is wrong, for HTTP answers and logs."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@attrs.frozen
class Command:
    """One validated command."""

    op: str
    tenant_id: str
    user_id: str | None = None
    device_id: str | None = None
    room: str | None = None
    event: str | None = None
    data: Any = NO_DATA
    rooms: tuple[str, ...] = ()
    reason: str = ""
    reconnect: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"v": 1, "op": self.op, "tenantId": self.tenant_id}
        for key, value in (
            ("userId", self.user_id),
            ("deviceId", self.device_id),
            ("room", self.room),
            ("event", self.event),
        ):
            if value is not None:
                out[key] = value
        if self.op == "emit" and self.data is not NO_DATA:
            out["data"] = self.data
        if self.op in ("join", "leave"):
            out["rooms"] = list(self.rooms)
        if self.op == "disconnect":
            out["reason"] = self.reason
            out["reconnect"] = self.reconnect
        return out


def _id(raw: dict[str, Any], key: str, required: bool) -> str | None:
    value = raw.get(key)
    if value is None:
        if required:
            raise CommandError("missing_field", f"{key} is required")
        return None
    if not isinstance(value, str) or not 0 < len(value) <= _ID_MAX:
        raise CommandError("invalid_field", f"{key} must be a string of 1..{_ID_MAX} characters")
    return value


def _rooms(raw: dict[str, Any]) -> tuple[str, ...]:
    rooms = raw.get("rooms")
    if not isinstance(rooms, list) or not rooms or len(rooms) > MAX_ROOMS:
        raise CommandError("invalid_field", f"rooms must be a list of 1..{MAX_ROOMS} room names")
    if not all(isinstance(r, str) and 0 < len(r) <= _ID_MAX for r in rooms):
        raise CommandError("invalid_field", f"room names are strings of 1..{_ID_MAX} characters")
    return tuple(dict.fromkeys(rooms))


def parse_command(raw: Any) -> Command:
    """Validate a decoded JSON command."""
    if not isinstance(raw, dict):
        raise CommandError("invalid_command", "a command is a JSON object")
    if type(raw.get("v")) is not int or raw["v"] != 1:
        raise CommandError("unsupported_version", 'only version 1 ("v": 1) is understood')
    op = raw.get("op")
    if op not in OPS:
        raise CommandError("invalid_op", f"op must be one of {', '.join(OPS)}")
    tenant = _id(raw, "tenantId", True)
    assert tenant is not None
    room = _id(raw, "room", False) if op == "emit" else None
    user = _id(raw, "userId", room is None)
    device = _id(raw, "deviceId", False)
    if room is not None and (user is not None or device is not None):
        raise CommandError("invalid_target", "address either a room or a user, not both")
    if device is not None and user is None:
        raise CommandError("invalid_target", "deviceId needs userId")
    if op == "emit":
        event = raw.get("event")
        if not isinstance(event, str) or not 0 < len(event) <= _EVENT_MAX or event in _RESERVED:
            raise CommandError("invalid_field", "event must be a non-reserved name")
        return Command(op, tenant, user, device, room, event, raw.get("data", NO_DATA))
    if op in ("join", "leave"):
        return Command(op, tenant, user, device, rooms=_rooms(raw))
    reason = raw.get("reason", "disconnected")
    if not isinstance(reason, str) or len(reason) > _ID_MAX:
        raise CommandError("invalid_field", f"reason is a string of up to {_ID_MAX} characters")
    reconnect = raw.get("reconnect", False)
    if not isinstance(reconnect, bool):
        raise CommandError("invalid_field", "reconnect is true or false")
    return Command(op, tenant, user, device, reason=reason, reconnect=reconnect)


def decode_command(payload: bytes | str) -> Command:
    """Parse and validate one command message."""
    try:
        raw = json.loads(payload)
    except (ValueError, RecursionError):
        raise CommandError("invalid_json", "the command is not valid JSON") from None
    return parse_command(raw)


def encode_command(command: Command) -> bytes:
    """The channel payload of ``command``."""
    return json.dumps(command.to_json(), separators=(",", ":"), ensure_ascii=False).encode()
