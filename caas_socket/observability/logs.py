"""Log observers for ``twistd --logger``: JSON lines or text, filtered by level.

Usage::

    CAAS_LOG_LEVEL=info twistd -n \\
        --logger=caas_socket.observability.logs.json_observer caas-socket ...
    twistd -n --logger=caas_socket.observability.logs.text_observer caas-socket ...

twistd calls the named factory with no arguments before it redirects standard
output into the log, so the observer keeps the real stdout.  Under systemd,
stdout goes to the journal (``StandardOutput=journal``, the default): run
``twistd -n`` (no daemon, no pid file) and let journald keep, rotate and ship
the lines.  When stdout *is* the journal (``$JOURNAL_STREAM`` names it), every
line starts with a ``<N>`` syslog priority that journald strips and turns into
``PRIORITY``, so ``journalctl -p warning`` works on JSON lines too.

One JSON object per line: ``time`` (ISO 8601, UTC), ``level``, ``namespace``,
``message`` (the formatted text), ``traceback`` for failures, and every
structured field of the event (``event``, ``socket_id``, ``reason``...), so a
log shipper can filter on ``event == "socket_state"`` without parsing text.

``CAAS_LOG_LEVEL`` is the minimum level, ``info`` by default (debug events,
e.g. Autobahn's per-frame lines, are dropped), optionally followed by levels
per namespace: ``CAAS_LOG_LEVEL=info,txredisapi=warn,caas_socket.cluster=debug``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    LogEvent,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
    formatEvent,
    formatEventAsClassicLogText,
)
from zope.interface import implementer

__all__ = ["LevelFilter", "format_json", "json_observer", "text_observer"]

#: Keys Twisted's legacy log adds to events (and mutates into shared ones); never ours.
_LEGACY = frozenset({"message", "time", "system", "isError", "format", "failure", "why"})
#: Output keys a structured field may not overwrite; such a field is written as ``field_<key>``.
_RESERVED = frozenset({"level", "namespace", "traceback"})
_PRIORITY = {
    LogLevel.debug: "<7>",
    LogLevel.info: "<6>",
    LogLevel.warn: "<4>",
    LogLevel.error: "<3>",
    LogLevel.critical: "<2>",
}
_RANK = {
    LogLevel.debug: 0,
    LogLevel.info: 1,
    LogLevel.warn: 2,
    LogLevel.error: 3,
    LogLevel.critical: 4,
}
_LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn}
_LEVELS |= {"warning": LogLevel.warn, "error": LogLevel.error, "critical": LogLevel.critical}


def _level(text: str, spec: str) -> LogLevel:
    try:
        return _LEVELS[text.strip().lower()]
    except KeyError:
        raise ValueError(
            f"CAAS_LOG_LEVEL={spec!r}: {text.strip()!r} is not one of debug, info, warn,"
            " error, critical"
        ) from None


@implementer(ILogFilterPredicate)
class LevelFilter:
    """Let through events at or above the level of their namespace.

    Unlike Twisted's ``LogLevelFilterPredicate``, an event without a level or
    namespace counts as ``info`` of the root namespace instead of vanishing.

    :param spec: ``level[,namespace=level...]``, e.g. ``info,autobahn=warn``.
    :raises ValueError: on an unknown level, so a typo stops the start.
    """

    def __init__(self, spec: str = "info") -> None:
        default, *overrides = (spec or "info").split(",")
        self._levels = LogLevelFilterPredicate(_level(default, spec))
        for override in overrides:
            namespace, equal, level = override.partition("=")
            if not equal or not namespace.strip():
                raise ValueError(f"CAAS_LOG_LEVEL={spec!r}: expected namespace=level")
            self._levels.setLogLevelForNamespace(namespace.strip(), _level(level, spec))
        # Per event, an int comparison and a dict lookup: comparing LogLevel
        # constants and walking namespaces cost more than writing the line.
        self._minimum: dict[str, int] = {}

    def __call__(self, event: LogEvent) -> PredicateResult:
        try:
            level = _RANK.get(event.get("log_level") or LogLevel.info)  # type: ignore[arg-type]
            namespace = event.get("log_namespace") or ""
            minimum = self._minimum.get(namespace)
            if minimum is None:
                minimum = _RANK[self._levels.logLevelForNamespace(namespace)]
                if len(self._minimum) < 10_000:
                    self._minimum[namespace] = minimum
            if level is None:
                return PredicateResult.maybe
            return PredicateResult.no if level < minimum else PredicateResult.maybe
        except Exception:  # a foreign level or namespace: show the event rather than lose it
            return PredicateResult.maybe


def format_json(event: LogEvent) -> str:
    """One event as one JSON line; never raises, whatever the event holds."""
    try:
        record = _record(event)
        try:
            return _encode_record(record) + "\n"
        except (TypeError, ValueError, RecursionError):
            return json.dumps({key: _plain(value) for key, value in record.items()}) + "\n"
    except Exception as e:
        return (
            json.dumps(
                {
                    "time": _iso(None),
                    "level": "error",
                    "namespace": __name__,
                    "message": f"unformattable log event: {_text(e)}",
                }
            )
            + "\n"
        )


def _record(event: LogEvent) -> dict[str, Any]:
    level = event.get("log_level")
    record: dict[str, Any] = {
        "time": _iso(event.get("log_time")),
        "level": getattr(level, "name", "info"),
        "namespace": event.get("log_namespace") or "-",
        "message": _message(event),
    }
    failure = event.get("log_failure")
    if failure is not None:
        try:
            record["traceback"] = failure.getTraceback()
        except Exception:
            record["traceback"] = _text(failure)
    for key, value in event.items():
        name = key if isinstance(key, str) else _text(key)
        if name.startswith("log_") or name in _LEGACY:
            continue
        record[f"field_{name}" if name in _RESERVED else name] = value
    return record


def _message(event: LogEvent) -> str:
    """The formatted message; ``str.format_map`` first, Twisted's formatter if that fails.

    Our format strings only use ``{name}`` and ``{name!r}``, which ``format_map``
    renders in C; Twisted's own formatter costs several times more per event.
    """
    text = event.get("log_format")
    if isinstance(text, str):
        try:
            return text.format_map(event)
        except Exception:
            pass
    return formatEvent(event)


_second: list[Any] = [None, ""]


def _iso(seconds: Any) -> str:
    """ISO 8601 UTC with microseconds; the date and time part is reused within a second."""
    stamp = seconds if isinstance(seconds, int | float) else datetime.now(UTC).timestamp()
    whole = int(stamp // 1)
    if _second[0] != whole:
        _second[0] = whole
        _second[1] = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{_second[1]}.{int((stamp - whole) * 1_000_000):06d}Z"


def _encode_record(record: dict[str, Any]) -> str:
    return _encoder.encode(record)


def _plain(value: Any) -> Any:
    """``value`` if it is JSON on its own, else its text."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return _text(value)
    return value


def _text(value: Any) -> str:
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


#: Built once: ``json.dumps`` with keyword arguments builds an encoder per call.
_encoder = json.JSONEncoder(default=_text, allow_nan=False)


def json_observer(
    stream: IO[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> ILogObserver:
    """JSON lines on ``stream`` (stdout), at ``$CAAS_LOG_LEVEL`` and above."""
    return _observer(stream, environ, format_json)


def text_observer(
    stream: IO[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> ILogObserver:
    """Twisted's classic text lines on ``stream`` (stdout), at ``$CAAS_LOG_LEVEL`` and above."""
    return _observer(stream, environ, formatEventAsClassicLogText)


def _observer(
    stream: IO[str] | None, environ: Mapping[str, str] | None, render: Any
) -> ILogObserver:
    out = sys.stdout if stream is None else stream  # before twistd redirects sys.stdout
    env = os.environ if environ is None else environ
    predicate = LevelFilter(env.get("CAAS_LOG_LEVEL", "info"))
    if _is_journal(out, env):

        def prefixed(event: LogEvent) -> str | None:
            text = render(event)
            if not text:
                return None
            prefix = _PRIORITY.get(event.get("log_level"), "<6>")  # type: ignore[arg-type]
            # journald reads one entry per line: give each line its priority.
            return "".join(prefix + line for line in text.splitlines(keepends=True))

        return FilteringLogObserver(FileLogObserver(out, prefixed), [predicate])
    return FilteringLogObserver(FileLogObserver(out, render), [predicate])


def _is_journal(stream: IO[str], environ: Mapping[str, str]) -> bool:
    """Whether ``stream`` is the journal: ``$JOURNAL_STREAM`` is its ``device:inode``."""
    expected = environ.get("JOURNAL_STREAM")
    if not expected:
        return False
    try:
        status = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return expected == f"{status.st_dev}:{status.st_ino}"
