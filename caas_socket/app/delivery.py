"""Delivery of an event to every device of a user."""

from __future__ import annotations

from typing import Any, Protocol

from ..naming import user_room
from ..server import Namespace

__all__ = ["LocalDelivery", "UserDelivery"]


class UserDelivery(Protocol):
    """Reaches all connections of one user, wherever they live."""

    def sync_to_user_devices(
        self,
        tenant_id: str,
        user_id: str,
        event: str,
        data: Any,
        except_socket: str | None = None,
    ) -> None:
        """Emit ``event`` with ``data`` to every device of the user but ``except_socket``."""


class LocalDelivery:
    """Single-node delivery: the user's room on this node is all there is."""

    def __init__(self, nsp: Namespace) -> None:
        self._nsp = nsp

    def sync_to_user_devices(
        self,
        tenant_id: str,
        user_id: str,
        event: str,
        data: Any,
        except_socket: str | None = None,
    ) -> None:
        operator = self._nsp.to(user_room(tenant_id, user_id))
        if except_socket is not None:
            operator = operator.except_(except_socket)
        operator.emit(event, data)
