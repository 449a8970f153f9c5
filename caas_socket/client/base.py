"""The methods both command clients share: build, validate, encode, then publish.

A command is built as the JSON object a node will receive and validated by
:func:`caas_socket.app.commands.parse_command`, the very function the nodes
run, so a client can never send what a node would drop, and the rules live in
one place.  Only the last step, the PUBLISH, differs between the blocking and
the Twisted client; it is the one abstract method.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Generic, TypeVar

from caas_socket.app.commands import Command, CommandError, encode_command, parse_command

__all__ = ["CommandSender", "api_channel", "build_command"]

R = TypeVar("R")


def api_channel(prefix: str) -> bytes:
    """The channel every node listens to for commands: ``{prefix}api``."""
    return f"{prefix}api".encode("utf-8", "surrogatepass")


def build_command(raw: dict[str, Any]) -> tuple[Command, bytes]:
    """Validate a command object and encode it for the channel.

    ``data`` is checked to be plain JSON here: a Python value that ``json``
    cannot write, or NaN, would otherwise fail late or reach the nodes as
    something other services cannot parse.

    :raises CommandError: as a node would refuse it.
    """
    if "data" in raw:
        try:
            json.dumps(raw["data"], allow_nan=False)
        except (TypeError, ValueError) as e:
            raise CommandError("invalid_field", f"data must be plain JSON: {e}") from None
    command = parse_command({key: value for key, value in raw.items() if value is not None})
    try:
        payload = encode_command(command)
    except UnicodeEncodeError as e:  # a lone surrogate in a string
        raise CommandError("invalid_field", f"text is not valid Unicode: {e}") from None
    return command, payload


def _room_list(rooms: str | Iterable[str]) -> list[str]:
    # A bare string is one room, not a list of one-character rooms.
    return [rooms] if isinstance(rooms, str) else list(rooms)


class CommandSender(Generic[R]):
    """What a service can do to users: every method returns what :meth:`publish` returns.

    For the blocking client that is the number of subscribers that received
    the command (normally the number of running nodes; 0 means nobody
    listened); for the Twisted client a Deferred of it.

    :param prefix: the nodes' ``--redis-prefix``.
    """

    def __init__(self, prefix: str = "caas:") -> None:
        self.prefix = prefix
        self.channel = api_channel(prefix)

    def publish(self, command: Command, payload: bytes) -> R:
        """Send an encoded, validated command to every node."""
        raise NotImplementedError

    def send(self, raw: dict[str, Any]) -> R:
        """Validate and publish a command given as its JSON object (``"v"`` may be left out)."""
        command, payload = build_command({"v": 1, **raw})
        return self.publish(command, payload)

    def emit_to_user(self, tenant: str, user: str, event: str, data: Any = None) -> R:
        """Deliver ``event`` to every connected device of one user."""
        return self.send(
            {"op": "emit", "tenantId": tenant, "userId": user, "event": event, "data": data}
        )

    def emit_to_device(
        self, tenant: str, user: str, device: str, event: str, data: Any = None
    ) -> R:
        """Deliver ``event`` to one device of one user."""
        return self.send(
            {
                "op": "emit",
                "tenantId": tenant,
                "userId": user,
                "deviceId": device,
                "event": event,
                "data": data,
            }
        )

    def emit_to_room(self, tenant: str, room: str, event: str, data: Any = None) -> R:
        """Deliver ``event`` to every member of an application room of the tenant."""
        return self.send(
            {"op": "emit", "tenantId": tenant, "room": room, "event": event, "data": data}
        )

    def join(
        self, tenant: str, user: str, rooms: str | Iterable[str], device: str | None = None
    ) -> R:
        """Put a user (now and for its future connections) or one device in rooms."""
        return self.send(
            {
                "op": "join",
                "tenantId": tenant,
                "userId": user,
                "deviceId": device,
                "rooms": _room_list(rooms),
            }
        )

    def leave(
        self, tenant: str, user: str, rooms: str | Iterable[str], device: str | None = None
    ) -> R:
        """Take a user (for good) or one device out of rooms."""
        return self.send(
            {
                "op": "leave",
                "tenantId": tenant,
                "userId": user,
                "deviceId": device,
                "rooms": _room_list(rooms),
            }
        )

    def disconnect(
        self,
        tenant: str,
        user: str,
        device: str | None = None,
        reason: str = "disconnected",
        reconnect: bool = False,
    ) -> R:
        """End a user's connections (or one device's).

        :param reconnect: ``False`` sends ``caas:kicked`` ``{"reason"}`` and a
            Socket.IO DISCONNECT, so the client stays away; ``True`` only closes
            the transport, so the client comes back (e.g. to pick up new rights).
        """
        return self.send(
            {
                "op": "disconnect",
                "tenantId": tenant,
                "userId": user,
                "deviceId": device,
                "reason": reason,
                "reconnect": reconnect,
            }
        )
