"""JSON exactly as socket.io puts it on the wire.

Encoding is compact and keeps non-ASCII text as is, like ``JSON.stringify``;
decoding is as strict as ``JSON.parse``: no ``NaN``/``Infinity``, no numbers
that overflow to infinity, and pathological nesting is an error, not a crash.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .errors import DecodeError

__all__ = ["dumps", "loads"]

_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number out of range: {text[:32]}")
    return value


_decoder = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def dumps(value: Any) -> str:
    """Compact JSON text of ``value``.

    :raises ValueError: for NaN/infinite floats; ``TypeError`` for values JSON
        cannot hold.  Both are programming errors of the emitter.
    """
    return _encoder.encode(value)


def loads(text: str) -> Any:
    """Parse one JSON document, as strictly as ``JSON.parse``."""
    try:
        return _decoder.decode(text)
    except (ValueError, RecursionError) as e:
        raise DecodeError(f"invalid JSON: {e}") from None
