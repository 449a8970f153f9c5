"""Rooms users joined, shared by every node in Redis.

``{prefix}rooms:{tenant}:{user}`` is a set of room names (escaped ids in the
key, raw names as members); adding is one script, so the limit holds when
several nodes add at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

from twisted.internet.interfaces import IReactorTime

from ..app.commands import CommandError
from ..naming import escape
from ..redis_connection import LuaScript, RedisConnection

__all__ = ["RedisUserRooms"]

_ADD = LuaScript(
    "rooms_add",
    resources.files("caas_socket.cluster").joinpath("lua/rooms_add.lua").read_bytes(),
)


def _b(value: str) -> bytes:
    return value.encode("utf-8", "surrogatepass")


class RedisUserRooms:
    """A :class:`~caas_socket.app.operations.UserRooms` in Redis."""

    def __init__(
        self,
        redis: RedisConnection,
        clock: IReactorTime,
        *,
        prefix: str,
        timeout: float,
        max_rooms: int,
    ) -> None:
        self._redis = redis
        self._clock = clock
        self._prefix = prefix
        self._timeout = timeout
        self.max_rooms = max_rooms

    def _key(self, tenant_id: str, user_id: str) -> bytes:
        return _b(f"{self._prefix}rooms:{escape(tenant_id)}:{escape(user_id)}")

    async def add(self, tenant_id: str, user_id: str, rooms: Sequence[str]) -> None:
        added = await self._redis.run_script(
            _ADD,
            (
                _b(self._prefix),
                _b(escape(tenant_id)),
                _b(escape(user_id)),
                self.max_rooms,
                *map(_b, rooms),
            ),
            within=self._timeout,
            clock=self._clock,
        )
        if added != 1:
            raise CommandError("too_many_rooms", f"a user may be in {self.max_rooms} rooms")

    async def remove(self, tenant_id: str, user_id: str, rooms: Sequence[str]) -> None:
        await self._redis.execute(
            "SREM", self._key(tenant_id, user_id), *map(_b, rooms), within=self._timeout
        )

    async def rooms_of(self, tenant_id: str, user_id: str) -> list[str]:
        members = await self._redis.execute(
            "SMEMBERS", self._key(tenant_id, user_id), within=self._timeout
        )
        return sorted(m.decode("utf-8", "surrogatepass") for m in members)
