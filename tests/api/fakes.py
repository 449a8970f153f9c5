"""Stand-ins for the API's unit tests: operations that record, and the site they run under."""

from __future__ import annotations

from typing import Any

import attrs

from caas_socket.app.commands import Command, CommandError
from caas_socket.app.presence import PresenceState
from caas_socket.registry.interfaces import Entry
from tests.api.client import ApiClient


class FakeOperations:
    """What the API asked for, recorded; rooms kept per user, with a limit of 3."""

    def __init__(self) -> None:
        self.sent: list[Command] = []
        self.rooms: dict[tuple[str, str], set[str]] = {}
        self.entries: dict[tuple[str, str], list[Entry]] = {}
        self.failure: Exception | None = None
        self.max_rooms = 3

    async def send(self, command: Command) -> None:
        if self.failure is not None:
            raise self.failure
        if command.op == "join" and command.device_id is None:
            assert command.user_id is not None
            rooms = self.rooms.setdefault((command.tenant_id, command.user_id), set())
            if len(rooms | set(command.rooms)) > self.max_rooms:
                raise CommandError("too_many_rooms", f"a user may be in {self.max_rooms} rooms")
            rooms.update(command.rooms)
        self.sent.append(command)

    async def connections(self, tenant_id: str, user_id: str) -> list[Entry]:
        if self.failure is not None:
            raise self.failure
        return self.entries.get((tenant_id, user_id), [])

    async def presence(self, tenant_id: str, user_ids: list[str]) -> list[PresenceState]:
        if self.failure is not None:
            raise self.failure
        return [PresenceState(u, "offline", (), 0) for u in user_ids]

    async def user_rooms(self, tenant_id: str, user_id: str) -> list[str]:
        if self.failure is not None:
            raise self.failure
        return sorted(self.rooms.get((tenant_id, user_id), ()))


@attrs.define
class LocalApi:
    ops: FakeOperations
    client: ApiClient
    port: Any

    @property
    def port_number(self) -> int:
        return int(self.port.getHost().port)

    def client_with(self, key: str | None) -> ApiClient:
        return ApiClient(self.client.base, key)
