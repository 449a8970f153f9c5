"""Exceptions of the application-facing API."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["AckError", "ConnectionRefused"]


class ConnectionRefused(Exception):
    """Raise from a middleware to refuse a namespace CONNECT.

    The client receives CONNECT_ERROR ``{"message": message, "data": data}``;
    socket.io-client exposes them as ``err.message`` and ``err.data``.
    """

    def __init__(self, message: str, data: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data

    def payload(self) -> dict[str, Any]:
        """The CONNECT_ERROR payload."""
        if self.data is None:
            return {"message": self.message}
        return {"message": self.message, "data": dict(self.data)}


class AckError(Exception):
    """An acknowledgement that will never come: timeout, disconnect or overload."""
