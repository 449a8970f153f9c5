"""Who is connecting: the JWT of ``auth.token`` and the ``deviceId`` of the query."""

from __future__ import annotations

from collections.abc import Callable

import attrs
from twisted.logger import Logger

from ..auth import CLIENT_MESSAGE, AuthError, Principal, TokenVerifier, validate_device_id
from ..server import ConnectionRefused, Socket

__all__ = ["IDENTITY", "Authenticate", "Identity", "identity_of"]

#: Key of the :class:`Identity` in ``socket.data``.
IDENTITY = "caas.identity"


@attrs.frozen
class Identity:
    """The authenticated user, tenant and device behind a socket."""

    principal: Principal
    device_id: str

    @property
    def user_id(self) -> str:
        return self.principal.user_id

    @property
    def tenant_id(self) -> str:
        return self.principal.tenant_id


def identity_of(socket: Socket) -> Identity:
    """The identity an :class:`Authenticate` middleware gave ``socket``."""
    identity: Identity = socket.data[IDENTITY]
    return identity


class Authenticate:
    """Middleware: verify the token and the device id, or refuse with their code.

    Every failure is CONNECT_ERROR ``"Authentication failed"`` with
    ``data.code`` naming the failed check; the log says why, never the token.
    """

    log = Logger()

    def __init__(self, verifier: TokenVerifier, new_device_id: Callable[[], str]) -> None:
        self._verifier = verifier
        self._new_device_id = new_device_id

    def __call__(self, socket: Socket) -> None:
        try:
            principal = self._verifier.verify(socket.handshake.auth.get("token"))
            device_id = validate_device_id(
                socket.handshake.query.get("deviceId"), self._new_device_id
            )
        except AuthError as e:
            self.log.info(
                "authentication of socket {socket_id} from {address} failed: {code} ({detail})",
                socket_id=socket.id,
                address=socket.handshake.address,
                code=e.code,
                detail=e.detail,
                event="auth_failed",
            )
            raise ConnectionRefused(CLIENT_MESSAGE, {"code": e.code}) from None
        socket.data[IDENTITY] = Identity(principal, device_id)
        socket.tags.update(user=principal.user_id, tenant=principal.tenant_id, device=device_id)
