"""Coercers of option values: a string (flag, env, INI) or a typed value -> the final type.

Accepting typed values lets ``Config.default()`` validate overrides the same
way as flags.  They raise ``ValueError`` saying what was expected; the caller
adds the option and where the value came from.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable

from twisted.internet.endpoints import serverFromString
from twisted.internet.testing import MemoryReactor

__all__ = [
    "JWS_ALGORITHMS",
    "algorithms",
    "api_key_file",
    "boolean",
    "choice",
    "count",
    "duration",
    "endpoints",
    "key_prefix",
    "leeway",
    "names",
    "positive_int",
    "rate",
    "readable_file",
    "redis_url",
    "secret",
    "server_id",
    "text",
]


_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def _seconds(value: str | float, what: str, minimum_exclusive: bool) -> float:
    if isinstance(value, str):
        match = _DURATION.fullmatch(value)
        seconds = float(match[1]) * _UNITS[match[2]] if match else math.nan
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        seconds = math.nan
    ok = seconds > 0 if minimum_exclusive else seconds >= 0
    if not (ok and math.isfinite(seconds)):
        raise ValueError(f"expected a {what} duration like 25, 25s or 500ms, got {value!r}")
    return seconds


def duration(value: str | float) -> float:
    """Seconds > 0; ``25``, ``25s``, ``500ms``, ``2m`` and ``1h`` all work."""
    return _seconds(value, "positive", minimum_exclusive=True)


def leeway(value: str | float) -> float:
    """Like :func:`duration` but 0 is allowed (no clock skew tolerated)."""
    return _seconds(value, "non-negative", minimum_exclusive=False)


def positive_int(value: str | int) -> int:
    """An integer >= 1 (``1_000_000`` is fine too)."""
    try:
        number = int(value.strip()) if isinstance(value, str) else value
    except ValueError:
        number = None
    if type(number) is not int or number < 1:
        raise ValueError(f"expected a positive integer, got {value!r}")
    return number


def count(value: str | int) -> int:
    """An integer >= 0."""
    try:
        number = int(value.strip()) if isinstance(value, str) else value
    except ValueError:
        number = None
    if type(number) is not int or number < 0:
        raise ValueError(f"expected a whole number >= 0, got {value!r}")
    return number


def rate(value: str | float) -> float:
    """A number of events per second, >= 0 (0: no limit)."""
    try:
        number = float(value.strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not (number >= 0 and math.isfinite(number)):
        raise ValueError(f"expected a number per second >= 0, got {value!r}")
    return number


def choice(*allowed: str) -> Callable[[str], str]:
    """Build a coercer accepting exactly one of ``allowed``."""

    def coerce(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}, got {value!r}")
        return value

    return coerce


def text(value: str) -> str:
    """A non-empty string (a claim name, an issuer)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value.strip()


def _items(value: str | tuple[str, ...], sep: str | None) -> tuple[str, ...]:
    items = value.split(sep) if isinstance(value, str) else tuple(value)
    items = tuple(item.strip() for item in items if isinstance(item, str) and item.strip())
    if not items or (not isinstance(value, str) and len(items) != len(value)):
        raise ValueError(f"expected a non-empty list, got {value!r}")
    return items


def endpoints(value: str | tuple[str, ...]) -> tuple[str, ...]:
    """Whitespace-separated server endpoint strings, each parsed (not listened on).

    Parsing with a :class:`MemoryReactor` catches typos at startup without
    touching the global reactor.
    """
    result = _items(value, None)
    for endpoint in result:
        try:
            serverFromString(MemoryReactor(), endpoint)
        except Exception as e:
            raise ValueError(
                f"expected a Twisted server endpoint like tcp:8080, got {endpoint!r}"
                f" ({type(e).__name__}: {e})"
            ) from None
    return result


_FAMILIES = ("HS", "RS", "PS", "ES")
JWS_ALGORITHMS = (*(f"{f}{bits}" for f in _FAMILIES for bits in (256, 384, 512)), "ES256K", "EdDSA")


def algorithms(value: str | tuple[str, ...]) -> tuple[str, ...]:
    """Comma-separated JWS algorithms; ``none`` is refused, it would accept unsigned tokens."""
    canonical = {name.lower(): name for name in JWS_ALGORITHMS}
    result: list[str] = []
    for name in _items(value, ","):
        if name.lower() == "none":
            raise ValueError("refusing algorithm 'none': it accepts unsigned tokens")
        if name.lower() not in canonical:
            raise ValueError(f"expected algorithms among {', '.join(JWS_ALGORITHMS)}, got {name!r}")
        if canonical[name.lower()] not in result:
            result.append(canonical[name.lower()])
    return tuple(result)


def names(value: str | tuple[str, ...]) -> tuple[str, ...]:
    """Comma-separated non-empty names (accepted audiences)."""
    return _items(value, ",")


def secret(value: str | bytes) -> bytes:
    """A non-empty secret as bytes. The error never echoes the value."""
    raw = value.encode() if isinstance(value, str) else value
    if not isinstance(raw, bytes) or not raw:
        raise ValueError("expected a non-empty secret")
    return raw


def readable_file(value: str) -> str:
    """A path that exists now and is readable, so a typo fails at startup, not at first use."""
    if not isinstance(value, str) or not os.path.isfile(value) or not os.access(value, os.R_OK):
        raise ValueError(f"expected a readable file, got {value!r}")
    return value


_SERVER_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def server_id(value: str) -> str:
    """A node id safe in Redis keys and logs: 1..64 of ``[A-Za-z0-9._-]``."""
    if not isinstance(value, str) or not _SERVER_ID.fullmatch(value):
        raise ValueError(f"expected 1 to 64 characters of [A-Za-z0-9._-], got {value!r}")
    return value


def redis_url(value: str) -> str:
    """A Redis URL that :meth:`~caas_socket.redis_connection.RedisURL.parse` accepts."""
    from .redis_connection import RedisURL

    try:
        RedisURL.parse(text(value))
    except ValueError as e:
        raise ValueError(str(e).removeprefix("--redis ")) from None
    return value


def api_key_file(value: str) -> str:
    """A file of API keys that parses (:func:`caas_socket.api.keys.check_key_file`)."""
    from .api.keys import check_key_file

    return check_key_file(value)


def key_prefix(value: str) -> str:
    """A key prefix: printable ASCII without spaces, possibly empty."""
    if not isinstance(value, str) or not re.fullmatch(r"[!-~]{0,64}", value):
        raise ValueError(f"expected up to 64 printable ASCII characters, got {value!r}")
    return value


def boolean(value: str | bool) -> bool:
    """For flags (``optFlags``) set from the environment or the INI file."""
    if isinstance(value, bool):
        return value
    spelled = str(value).strip().lower()
    if spelled in ("1", "true", "yes", "on"):
        return True
    if spelled in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")
