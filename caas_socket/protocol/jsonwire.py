"""JSON exactly as socket.io puts it on the wire.

Encoding is compact and keeps non-ASCII text as is, like ``JSON.stringify``;
decoding is as strict as ``JSON.parse``: no ``NaN``/``Infinity``, no numbers
that overflow to infinity, and pathological nesting is an error, not a crash.
"""

from __future__ import annotations

import json
import math
from json import encoder as _json_encoder
from typing import Any

from .errors import DecodeError

__all__ = ["dumps", "loads"]

_JSON_SPACE = " \t\n\r"


def _unsupported(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# The C encoder itself, without JSONEncoder's Python layers (they cost as much
# as the encoding of a small event).  Same output as
# json.dumps(..., separators=(",", ":"), ensure_ascii=False, allow_nan=False).
_c_encoder = _json_encoder.c_make_encoder
if _c_encoder is None:  # pragma: no cover - CPython always has it
    _fallback = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)

    def _encode(value: Any) -> str:
        return _fallback.encode(value)

else:
    # One encoder for every call: building it costs more than encoding a small
    # event.  No circular-reference markers (None): a cycle ends in a
    # RecursionError, which dumps() turns into a ValueError.
    _shared_encoder = _c_encoder(  # type: ignore[misc]
        None,
        _unsupported,
        _json_encoder.encode_basestring,
        None,
        ":",
        ",",
        False,
        False,
        False,
    )

    def _encode(value: Any) -> str:
        return "".join(_shared_encoder(value, 0))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number out of range: {text[:32]}")
    return value


_decoder = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
_scan_once = _decoder.scan_once


def dumps(value: Any) -> str:
    """Compact JSON text of ``value``.

    :raises ValueError: for NaN/infinite floats; ``TypeError`` for values JSON
        cannot hold.  Both are programming errors of the emitter.
    """
    try:
        return _encode(value)
    except RecursionError:
        raise ValueError("data nested too deeply to encode") from None


def loads(text: str) -> Any:
    """Parse one JSON document, as strictly as ``JSON.parse``."""
    start = 0
    if text[:1] in _JSON_SPACE:  # also true for "": the scan below then fails
        start = len(text) - len(text.lstrip(_JSON_SPACE))
    try:
        value, end = _scan_once(text, start)
    except StopIteration:
        raise DecodeError(f"invalid JSON: expecting a value at {start}") from None
    except (ValueError, RecursionError) as e:
        raise DecodeError(f"invalid JSON: {e}") from None
    if end != len(text) and text[end:].strip(_JSON_SPACE):
        raise DecodeError(f"invalid JSON: extra data at {end}")
    return value
