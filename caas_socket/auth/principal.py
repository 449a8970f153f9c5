"""What authentication yields, what it refuses with, and the checks shared by every verifier."""

from __future__ import annotations

import re
import typing
from collections.abc import Callable, Mapping
from typing import Any

import attrs

CLIENT_MESSAGE = "Authentication failed"
FAILURE_CODES = frozenset(
    {
        "missing_token",
        "malformed_token",
        "token_too_large",
        "invalid_algorithm",
        "unknown_key",
        "invalid_signature",
        "expired",
        "not_yet_valid",
        "invalid_issuer",
        "invalid_audience",
        "missing_claim",
        "invalid_claim",
        "invalid_device_id",
    }
)
MAX_CLAIM = 256
CLAIM_TEXT = re.compile(rf"[^\x00-\x1f\x7f-\x9f]{{1,{MAX_CLAIM}}}")
_DEVICE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}", re.ASCII)


@attrs.frozen
class Principal:
    """Who a connection acts for; ``expires_at`` lets the server end a session with its token."""

    user_id: str
    tenant_id: str
    expires_at: float | None
    claims: Mapping[str, Any] = attrs.field(repr=False, eq=False)


class AuthError(Exception):
    """A refused CONNECT: ``code`` goes to the client, ``detail`` only to logs.

    :param code: one of :data:`FAILURE_CODES`.
    :param detail: built from our own words and :func:`show` of untrusted values, so it never
        holds the token or a secret and is safe to log.
    """

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code, self.detail = code, detail

    def to_client(self) -> dict[str, Any]:
        """The CONNECT_ERROR payload: one message for every failure tells an attacker little."""
        return {"message": CLIENT_MESSAGE, "data": {"code": self.code}}


@typing.runtime_checkable
class TokenVerifier(typing.Protocol):
    """What the connection layer needs; JWT and dev mode are interchangeable behind it."""

    def verify(self, token: object) -> Principal:
        """:raises AuthError: when the token does not authenticate anyone."""
        ...


def show(value: object) -> str:
    """A short repr of an untrusted value: escapes control characters and bounds the log line."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def validate_device_id(value: str | None, generate: Callable[[], str]) -> str:
    """Check the handshake ``deviceId``, used in keys and logs; absent means a per-connection id.

    :param generate: makes the id when the client sent none, so such clients never share a slot.
    :raises AuthError: ``invalid_device_id`` unless 1..128 characters of ``[A-Za-z0-9._:-]``.
    """
    if value is None:
        return generate()
    if not isinstance(value, str) or not _DEVICE_ID.fullmatch(value):
        raise AuthError(
            "invalid_device_id", "deviceId must be 1..128 characters of [A-Za-z0-9._:-]"
        )
    return value
