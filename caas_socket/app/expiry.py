"""A connection does not outlive its token.

At the token's ``exp`` plus the leeway the transport is closed, so
socket.io-client reconnects and, when its ``auth`` is a function, presents a
fresh token.  With a refresh event configured the server first asks the
client (an emit with an ack, ``lead`` seconds before ``exp``) for a new
token; a client may also send one on its own with the event
``caas:refresh-token``.  A valid token of the same user and tenant extends
the connection in place.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..auth import AuthError, TokenVerifier
from ..server import AckError, Namespace, Socket
from ..timers import Timer, TimerWheel
from .identity import IDENTITY, Identity, identity_of

__all__ = ["REFRESH_EVENT", "TokenExpiry"]

#: Client-to-server event carrying a fresh token (``{"token": ...}`` or the token).
REFRESH_EVENT = "caas:refresh-token"
_TIMERS = "caas.expiry"
EXPIRED_REASON = "token expired"


class TokenExpiry:
    """Schedules the end of each connection at its token's expiry."""

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        wheel: TimerWheel,
        verifier: TokenVerifier,
        *,
        leeway: float,
        refresh_event: str | None = None,
        lead: float = 60.0,
        ack_timeout: float = 10.0,
    ) -> None:
        self._clock = clock
        self._wheel = wheel
        self._verifier = verifier
        self._leeway = leeway
        self.refresh_event = refresh_event
        self._lead = lead
        self._ack_timeout = ack_timeout

    def install(self, nsp: Namespace) -> None:
        """Arm every connection of ``nsp`` and accept in-band refreshes."""
        nsp.on_connect(self.watch)
        nsp.on(REFRESH_EVENT, lambda socket, data=None, *_: self.refresh(socket, data))

    def watch(self, socket: Socket) -> None:
        """Connect handler: arm the expiry of a freshly connected socket."""
        expires_at = identity_of(socket).principal.expires_at
        if expires_at is not None:
            self._arm(socket, expires_at)
            socket.add_cleanup(lambda: self._disarm(socket))

    def _disarm(self, socket: Socket) -> None:
        for timer in socket.data.pop(_TIMERS, ()):
            timer.cancel()

    def _arm(self, socket: Socket, expires_at: float) -> None:
        self._disarm(socket)
        now = self._clock.seconds()
        timers: list[Timer] = [
            self._wheel.call_later(expires_at + self._leeway - now, self._expire, socket)
        ]
        if self.refresh_event is not None:
            ask_at = max(now, expires_at - min(self._lead, (expires_at - now) / 2))
            timers.append(self._wheel.call_later(ask_at - now, self._ask, socket, expires_at))
        socket.data[_TIMERS] = timers

    def _expire(self, socket: Socket) -> None:
        if socket.disconnected:
            return
        self.log.info(
            "socket {socket_id}: token expired, closing the transport",
            socket_id=socket.id,
            event="token_expired",
            **socket.tags,
        )
        socket.close_connection(EXPIRED_REASON)

    def _ask(self, socket: Socket, expires_at: float) -> None:
        assert self.refresh_event is not None
        request = socket.call(
            self.refresh_event, {"expiresAt": int(expires_at * 1000)}, timeout=self._ack_timeout
        )
        request.addCallbacks(
            lambda answer: self.refresh(socket, answer[0] if answer else None),
            _ignore_ack_error,
        )

    def refresh(self, socket: Socket, token: Any) -> dict[str, Any]:
        """Extend ``socket`` with a new token; the answer tells the client how it went."""
        if isinstance(token, dict):
            token = token.get("token")
        identity = identity_of(socket)
        try:
            principal = self._verifier.verify(token)
        except AuthError as e:
            self.log.info(
                "socket {socket_id}: token refresh refused ({code})",
                socket_id=socket.id,
                code=e.code,
                event="token_refresh_refused",
                **socket.tags,
            )
            return {"error": e.code}
        if (principal.user_id, principal.tenant_id) != (identity.user_id, identity.tenant_id):
            return {"error": "other_identity"}
        socket.data[IDENTITY] = Identity(principal, identity.device_id)
        if principal.expires_at is None:
            self._disarm(socket)
        else:
            self._arm(socket, principal.expires_at)
        self.log.info(
            "socket {socket_id}: token refreshed",
            socket_id=socket.id,
            event="token_refreshed",
            **socket.tags,
        )
        expires = principal.expires_at
        return {"expiresAt": None if expires is None else int(expires * 1000)}


def _ignore_ack_error(failure: Failure) -> None:
    failure.trap(AckError)
