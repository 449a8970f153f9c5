"""API keys of the internal HTTP API, read from ``--api-key-file``.

The file holds one key per line, optionally followed by whitespace and the
comma-separated tenants that key may act for (``*``, or nothing, for every
tenant); ``#`` starts a comment, at the start of a line or after whitespace::

    # billing acts for one tenant, the chat backend for all
    k3y-of-the-billing-service-0123456789   acme
    k3y-of-the-chat-backend-abcdefghijklm   *

Keys are 16 to 512 printable ASCII characters without spaces.  Only their
SHA-256 digests are kept, and a presented key is compared with *every* one of
them with :func:`hmac.compare_digest`, without stopping at a match: neither the
time taken nor the length of a key tells an attacker how close a guess was.
A key is known in logs by its line number, never by its value.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import stat
from collections.abc import Iterable

import attrs
from twisted.logger import Logger

from ..config import ConfigError
from .errors import ApiError

__all__ = ["ApiKeys", "ApiPrincipal", "check_key_file"]

OPTION = "--api-key-file"
_KEY = re.compile(r"[!-~]{16,512}")
_TENANT = re.compile(r"[^\s,]{1,256}")
#: Longest ``Authorization`` header worth hashing; longer is refused unread.
_MAX_HEADER = 1024
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="caas-socket"'}


@attrs.frozen
class ApiPrincipal:
    """Who calls: a key of the file, named by its line.

    :param tenants: the tenants it may act for; ``None`` for every tenant.
    """

    name: str
    tenants: frozenset[str] | None = None

    def may_act_for(self, tenant: str) -> bool:
        return self.tenants is None or tenant in self.tenants


@attrs.frozen
class _Key:
    digest: bytes = attrs.field(repr=False)
    principal: ApiPrincipal


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def _strip_comment(line: str) -> str:
    if line.lstrip().startswith("#"):
        return ""
    return re.split(r"\s#", line, maxsplit=1)[0].strip()


def _parse_line(text: str, where: str) -> tuple[str, frozenset[str] | None] | None:
    """One line: ``None`` if blank or a comment.  Errors never quote the key."""
    fields = _strip_comment(text).split()
    if not fields:
        return None
    if len(fields) > 2:
        raise ConfigError(
            f"{OPTION}: {where}: expected a key and optionally tenants separated by commas"
            " (no spaces)"
        )
    if not _KEY.fullmatch(fields[0]):
        raise ConfigError(
            f"{OPTION}: {where}: a key is 16 to 512 printable ASCII characters without spaces"
        )
    if len(fields) == 1 or fields[1] == "*":
        return fields[0], None
    tenants = fields[1].split(",")
    if not all(_TENANT.fullmatch(t) and t != "*" for t in tenants):
        raise ConfigError(
            f"{OPTION}: {where}: tenants are non-empty names separated by commas, or * alone"
        )
    return fields[0], frozenset(tenants)


def _read(path: str) -> tuple[str, int]:
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
        return text, os.stat(path).st_mode
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{OPTION}: cannot read {path}: {e}") from None


def check_key_file(path: str) -> str:
    """Coercer of ``--api-key-file``: ``path``, once its keys parse.

    Run when options are parsed, so that a bad file is a usage error naming
    the option and where its value came from, before anything starts.

    :raises ValueError: what is wrong (the caller adds the option and source).
    """
    try:
        ApiKeys.parse(_read(path)[0], path)
    except ConfigError as e:
        raise ValueError(str(e).removeprefix(f"{OPTION}: ")) from None
    return path


class ApiKeys:
    """The keys that may call the API, and what each may do."""

    log = Logger()

    def __init__(self, keys: Iterable[tuple[str, frozenset[str] | None, str]]) -> None:
        """:param keys: ``(key, tenants or None for all, name for logs)``; see :meth:`parse`."""
        self._keys = [_Key(_digest(k.encode()), ApiPrincipal(name, t)) for k, t, name in keys]
        if not self._keys:
            raise ConfigError(f"{OPTION}: no key given")

    def __repr__(self) -> str:
        return f"<ApiKeys: {len(self._keys)} keys>"

    def __len__(self) -> int:
        return len(self._keys)

    @classmethod
    def parse(cls, text: str, source: str = "keys") -> ApiKeys:
        """Keys from the text of a key file; principals are named by line (``line 3``)."""
        parsed: list[tuple[str, frozenset[str] | None, str]] = []
        seen: dict[bytes, int] = {}
        for number, line in enumerate(text.splitlines(), 1):
            entry = _parse_line(line, f"{source} line {number}")
            if entry is None:
                continue
            digest = _digest(entry[0].encode())
            if digest in seen:
                raise ConfigError(
                    f"{OPTION}: {source} line {number} repeats the key of line {seen[digest]}"
                )
            seen[digest] = number
            parsed.append((*entry, f"line {number}"))
        if not parsed:
            raise ConfigError(f"{OPTION}: {source} holds no key")
        return cls(parsed)

    @classmethod
    def from_file(cls, path: str) -> ApiKeys:
        """Read ``--api-key-file``.

        :raises ConfigError: naming the option when the file is unreadable, holds
            no key, or has a malformed line (a usage error: twistd prints it).
        """
        text, mode = _read(path)
        keys = cls.parse(text, path)
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            cls.log.warn(
                "{option} {path} can be read by other users (chmod 600 it)",
                option=OPTION,
                path=path,
                event="api_keys_exposed",
            )
        return keys

    def check(self, header: bytes | str | None, tenant: str | None) -> ApiPrincipal | ApiError:
        """Who ``Authorization: Bearer <key>`` is, if it may act for ``tenant``.

        :param tenant: ``None`` for routes that address no tenant.
        :returns: the principal, or the error to answer: 401 ``unauthorized``
            (missing or unknown key), 403 ``forbidden`` (not for that tenant).
        """
        if isinstance(header, bytes):
            header = header.decode("latin-1")
        if not header or len(header) > _MAX_HEADER:
            return ApiError(401, "unauthorized", "send Authorization: Bearer <key>", _CHALLENGE)
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return ApiError(401, "unauthorized", "send Authorization: Bearer <key>", _CHALLENGE)
        presented = _digest(token.strip().encode("latin-1"))
        found: ApiPrincipal | None = None
        for key in self._keys:  # every key, always: no early exit on a match
            if hmac.compare_digest(presented, key.digest):
                found = key.principal
        if found is None:
            return ApiError(401, "unauthorized", "unknown API key", _CHALLENGE)
        if tenant is not None and not found.may_act_for(tenant):
            return ApiError(403, "forbidden", "this API key may not act for this tenant")
        return found
