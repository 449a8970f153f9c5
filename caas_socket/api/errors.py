"""The one shape of every refusal of the HTTP API.

Callers are other services: they branch on a stable ``code`` and show the
``message`` to a human, so every error, from a missing route to Redis being
down, is ``{"error": {"code": "...", "message": "..."}}`` with a fitting status.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from ..app.commands import CommandError

__all__ = ["ApiError", "from_command_error"]

#: Command codes that are not field errors: the request was valid but conflicts with state.
_CONFLICTS = frozenset({"too_many_rooms"})


class ApiError(Exception):
    """A refused request: raised anywhere below the resource, answered as JSON.

    :param status: the HTTP status.
    :param code: stable, machine-readable (``unauthorized``, ``invalid_field``...).
    :param message: for humans; never echoes a key or a body.
    :param headers: extra response headers (``Allow``, ``WWW-Authenticate``).
    """

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def __repr__(self) -> str:
        return f"ApiError({self.status}, {self.code!r}, {self.message!r})"

    def to_json(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}

    def body(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":")).encode()


def from_command_error(error: CommandError) -> ApiError:
    """409 for a conflict with the user's state (``too_many_rooms``), else 422, same code."""
    return ApiError(409 if error.code in _CONFLICTS else 422, error.code, error.message)
