"""Settings of a :class:`~caas_socket.server.SocketServer` and the handshake data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["Handshake", "Settings"]


def _positive(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


@attrs.frozen
class Settings:
    """Protocol settings; the defaults are socket.io's, bounds are ours.

    Durations are seconds.  ``connect_timeout`` closes a connection that has no
    namespace connected for that long (at the start, or after leaving its last one).
    """

    path: str = "/socket.io/"
    ping_interval: float = attrs.field(default=25.0, validator=_positive)
    ping_timeout: float = attrs.field(default=20.0, validator=_positive)
    connect_timeout: float = attrs.field(default=45.0, validator=_positive)
    max_payload: int = attrs.field(default=1_000_000, validator=_positive)
    #: Binary attachments one packet may announce.
    max_attachments: int = attrs.field(default=64, validator=_positive)
    #: Acks one socket may await from its client at once.
    max_pending_acks: int = attrs.field(default=1024, validator=_positive)
    #: Rooms one socket may be in.
    max_rooms_per_socket: int = attrs.field(default=1024, validator=_positive)
    #: Granularity of heartbeat and timeout deadlines.
    timer_resolution: float = attrs.field(default=0.05, validator=_positive)


@attrs.frozen
class Handshake:
    """What the client presented when it opened the connection and the namespace."""

    query: Mapping[str, str]
    headers: Mapping[str, str] = attrs.field(repr=False)
    address: str
    secure: bool
    url: str
    #: Connection time, ms since the epoch.
    issued: int
    #: The CONNECT payload (``auth`` of socket.io-client) of this namespace.
    auth: Mapping[str, Any] = attrs.field(factory=dict, repr=False)

    def with_auth(self, auth: Mapping[str, Any]) -> Handshake:
        """This handshake for one namespace's CONNECT (``attrs.evolve``, without its cost)."""
        return Handshake(
            self.query, self.headers, self.address, self.secure, self.url, self.issued, auth
        )
