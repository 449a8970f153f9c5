"""Rooms of one namespace on this node, and local delivery to them.

A socket is implicitly in the room named by its own id, as in socket.io; that
room is resolved through the namespace's socket table instead of being stored,
which saves a set per connection.  Cluster-wide delivery wraps this adapter
(see :mod:`caas_socket.cluster`); this one only knows local sockets.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..protocol.socketio import Packet
from .frames import encode_frames

if TYPE_CHECKING:
    from .socket import Socket

__all__ = ["Adapter", "RoomLimitExceeded"]


class RoomLimitExceeded(Exception):
    """A socket tried to join more rooms than ``max_rooms_per_socket``."""


class Adapter:
    """Room membership and local fan-out for one namespace."""

    def __init__(self, sockets: dict[str, Socket], max_rooms_per_socket: int) -> None:
        self._sockets = sockets
        self._max_rooms = max_rooms_per_socket
        self.rooms: dict[str, set[Socket]] = {}

    def join(self, socket: Socket, room: str) -> None:
        """Add ``socket`` to ``room`` (idempotent)."""
        if room in socket.rooms:
            return
        if len(socket.rooms) >= self._max_rooms:
            raise RoomLimitExceeded(f"socket {socket.id} is already in {self._max_rooms} rooms")
        socket.rooms.add(room)
        members = self.rooms.get(room)
        if members is None:
            self.rooms[room] = {socket}
        else:
            members.add(socket)

    def leave(self, socket: Socket, room: str) -> None:
        """Remove ``socket`` from ``room`` (idempotent)."""
        socket.rooms.discard(room)
        members = self.rooms.get(room)
        if members is not None:
            members.discard(socket)
            if not members:
                del self.rooms[room]

    def leave_all(self, socket: Socket) -> None:
        """Remove ``socket`` from every room it is in."""
        for room in list(socket.rooms):
            self.leave(socket, room)

    def room_size(self, room: str) -> int:
        """Local members of ``room``."""
        members = self.rooms.get(room)
        if members is not None:
            return len(members)
        return 1 if room in self._sockets else 0

    def recipients(
        self, rooms: Iterable[str] | None, except_rooms: Iterable[str] = ()
    ) -> set[Socket] | list[Socket]:
        """Local connected sockets in any of ``rooms`` (all when ``None``), minus exclusions."""
        sockets = self._sockets
        if rooms is None:
            chosen: set[Socket] | list[Socket] = [s for s in sockets.values() if s.connected]
        else:
            chosen = set()
            for room in rooms:
                members = self.rooms.get(room)
                if members is not None:
                    chosen.update(members)
                else:
                    own = sockets.get(room)
                    if own is not None:
                        chosen.add(own)
        excluded = self.recipients(except_rooms) if except_rooms else None
        if excluded:
            return [s for s in chosen if s not in excluded and s.connected]
        return chosen

    def broadcast(
        self, packet: Packet, rooms: Iterable[str] | None, except_rooms: Iterable[str] = ()
    ) -> int:
        """Encode ``packet`` once and deliver it locally; returns the recipients."""
        return self.deliver(encode_frames(packet), rooms, except_rooms)

    def deliver(
        self, frames: list[bytes], rooms: Iterable[str] | None, except_rooms: Iterable[str] = ()
    ) -> int:
        """Send already encoded ``frames`` to local recipients; returns how many."""
        count = 0
        for socket in self.recipients(rooms, except_rooms):
            if socket.send_frames(frames):
                count += 1
        return count
