"""twistd entry point: ``twistd -n caas-socket [options]``.

:class:`Options` is generated from :data:`caas_socket.config.OPTIONS`, so
flags, environment variables, INI keys and ``--help`` never drift apart.
:func:`makeService` is the only place in the project that touches the global
reactor; everything below it receives the reactor as an argument.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from caas_socket.config import ENV_PREFIX, OPTIONS, SECTION, Config, Opt


def _doc(opt: Opt) -> str:
    return f"{opt.help} [env: {opt.env}]"


def _shown(opt: Opt) -> str | None:
    """The default as a user would type it (Twisted would print the repr of a tuple)."""
    value = opt.default
    if isinstance(value, tuple):
        return (" " if opt.repeatable else ",").join(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return None if value is None else str(value)


def usage_lists(table: tuple[Opt, ...]) -> tuple[list[list[Any]], list[list[Any]]]:
    """``optParameters`` and ``optFlags`` for :class:`usage.Options`, from the table."""
    parameters = [[o.name, None, o.default, _doc(o), o.coerce] for o in table if not o.flag]
    return parameters, [[o.name, None, _doc(o)] for o in table if o.flag]


class _GivenParameter(usage.CoerceParameter):
    """Coerce a flag's value and remember that it was given on the command line.

    Defaults are already typed, so the value alone cannot tell a typed
    ``--ping-interval 25`` from the default; :attr:`Options.given` can, and it
    is what lets env and INI file beat defaults but not flags.
    """

    def __init__(self, options: Options, opt: Opt) -> None:
        super().__init__(options, opt.coerce)
        self.opt = opt

    def dispatch(self, name: str, value: str | None) -> None:
        coerced = self.opt.parse(value or "", "command line")
        if self.opt.repeatable and name in self.options.given:
            coerced = self.options[name] + coerced
        self.options[name] = coerced
        self.options.given.add(name)


class Options(usage.Options):
    """Command-line options of ``twistd caas-socket``, one per :data:`OPTIONS` entry."""

    synopsis = "[options]"
    longdesc = (
        "Real-time connection service: Socket.IO v5 over WebSocket with JWT auth. "
        f"Every option can also be set with the {ENV_PREFIX}<NAME> environment variable "
        "shown beside it, or as a key of the "
        f"[{SECTION}] section of the INI file given by --config. Precedence: "
        "flag > environment > INI file > default. Durations take 25, 25s, 500ms or 2m."
    )
    table: tuple[Opt, ...] = OPTIONS
    optParameters, optFlags = usage_lists(OPTIONS)

    def __init__(self) -> None:
        super().__init__()
        #: Option names explicitly given on the command line (see _GivenParameter).
        self.given: set[str] = set()
        for opt in self.table:
            if opt.flag:
                self[opt.name] = opt.default
                self._dispatch[opt.name] = lambda name, value=None: self._given_flag(name)
            else:
                self._dispatch[opt.name] = _GivenParameter(self, opt)
        # Only read by getUsage: show defaults as typed, not as Python reprs.
        self.defaults = {o.name: _shown(o) for o in self.table}

    def _given_flag(self, name: str) -> None:
        self[name] = True
        self.given.add(name)

    def postOptions(self) -> None:
        """Build the Config once now so bad env/INI values fail with usage text, not later."""
        Config.from_options(self, os.environ)

    def __repr__(self) -> str:
        shown: dict[str, Any] = dict(self)
        if shown.get("jwt-secret") is not None:
            shown["jwt-secret"] = "<redacted>"
        return f"Options({shown!r})"


def makeService(options: Options) -> IService:
    """Build the service tree for twistd.

    Config errors are :class:`~caas_socket.config.ConfigError`, a
    :class:`~twisted.python.usage.UsageError`.
    """
    config = Config.from_options(options, os.environ)
    import prometheus_client
    from twisted.internet import reactor

    from caas_socket.service import build_service

    # Process-wide switch: no "_created" twin of every counter in /metrics.
    prometheus_client.disable_created_metrics()

    return build_service(config, reactor)
