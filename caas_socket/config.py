"""The frozen :class:`Config` and the one table of options it is built from.

Every option is declared once, in :data:`OPTIONS`. The command line
(:mod:`caas_socket.tap`), the ``CAAS_*`` environment, the INI file and
``--help`` are all derived from that table, so they cannot drift apart.
Precedence is command line > environment > INI file > default.

To add an option: one :class:`Opt` line in :data:`OPTIONS` and a field of the
same (snake_case) name in :class:`Config`.
"""

from __future__ import annotations

import configparser
import os
import re
import socket
from collections.abc import Callable, Mapping, Set
from typing import Any, Protocol

import attrs
from twisted.python.usage import UsageError

from .coerce import (
    JWS_ALGORITHMS,
    algorithms,
    api_key_file,
    boolean,
    choice,
    count,
    duration,
    endpoints,
    key_prefix,
    leeway,
    names,
    positive_int,
    rate,
    readable_file,
    redis_url,
    secret,
    server_id,
    text,
)

SECTION = "caas-socket"
ENV_PREFIX = "CAAS_"


class ConfigError(UsageError):
    """An invalid configuration value or combination.

    A :class:`~twisted.python.usage.UsageError` so that twistd prints it with
    the usage text, wherever it is raised (``postOptions`` or ``makeService``).
    """


@attrs.frozen
class Opt:
    """One option: its flag, env var, INI key, coercion, default and help all come from here.

    :param default: already of the final type (what ``coerce`` returns).
    :param repeatable: the flag may be given several times; env/INI values are
        whitespace-separated. Flags replace, never extend, env/file/default.
    :param flag: a boolean ``optFlags`` switch rather than a parameter.
    :param in_file: ``False`` for options the INI file cannot set (``--config`` itself).
    """

    name: str
    coerce: Callable[[Any], Any]
    default: Any
    help: str
    repeatable: bool = False
    flag: bool = False
    in_file: bool = True

    @property
    def attr(self) -> str:
        return self.name.replace("-", "_")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.attr.upper()

    def parse(self, value: Any, source: str) -> Any:
        """Coerce ``value``; on failure name the option and where the value came from."""
        try:
            return self.coerce(value)
        except ValueError as e:
            raise ConfigError(f"--{self.name} (from {source}): {e}") from None


# One entry per option; kept one line each on purpose, so adding an option is one line.
# fmt: off
OPTIONS: tuple[Opt, ...] = (
    Opt("config", readable_file, None, f"INI file; its [{SECTION}] keys are option names (ping-interval or ping_interval).", in_file=False),  # noqa: E501
    Opt("listen", endpoints, ("tcp:8080:interface=127.0.0.1",), "Server endpoint (tcp:, ssl:, unix:, systemd:); repeat the flag for several, whitespace-separate them in env/INI. Flags replace env/INI.", repeatable=True),  # noqa: E501
    Opt("auth", choice("jwt", "none"), "jwt", "Client authentication: jwt, or none (dev only)."),
    Opt("jwt-secret", secret, None, "HMAC secret for HS* tokens. Prefer --jwt-secret-file or CAAS_JWT_SECRET: flags are visible in ps."),  # noqa: E501
    Opt("jwt-secret-file", readable_file, None, "File holding the HMAC secret (trailing newline stripped)."),  # noqa: E501
    Opt("jwt-public-key", readable_file, None, "PEM public key for RS*, PS*, ES*, EdDSA tokens."),
    Opt("jwt-jwks", readable_file, None, "JWKS file of public keys, chosen by the token's kid."),
    Opt("jwt-algorithms", algorithms, ("HS256",), "Comma-separated accepted JWS algorithms; 'none' is refused."),  # noqa: E501
    Opt("jwt-issuer", text, None, "Required iss claim, if any."),
    Opt("jwt-audience", names, None, "Comma-separated accepted aud values, if any."),
    Opt("jwt-leeway", leeway, 10.0, "Clock skew tolerated on exp/nbf/iat, in seconds."),
    Opt("user-claim", text, "sub", "Token claim holding the user id."),
    Opt("tenant-claim", text, "tenantId", "Token claim holding the tenant id."),
    Opt("max-devices", positive_int, 5, "Concurrent connections allowed per user."),
    Opt("device-limit-policy", choice("reject", "evict-oldest"), "reject", "For a connection over --max-devices: reject it, or evict the oldest."),  # noqa: E501
    Opt("ping-interval", duration, 25.0, "Engine.IO pingInterval: 25, 25s, 500ms or 2m."),
    Opt("ping-timeout", duration, 20.0, "Engine.IO pingTimeout (same units)."),
    Opt("connect-timeout", duration, 45.0, "Time allowed to complete the Socket.IO connect."),
    Opt("max-payload", positive_int, 1_000_000, "Largest accepted message, in bytes."),
    Opt("max-outbound-buffer", count, 1024 * 1024, "Bytes a client may leave unread before it is dropped as a slow consumer (0: no limit)."),  # noqa: E501
    Opt("connect-rate-per-ip", rate, 0.0, "Connects per second one client address may open after its burst (0: no limit). Behind a load balancer, set --trusted-proxies first."),  # noqa: E501
    Opt("connect-burst-per-ip", positive_int, 100, "Connects one client address may open at once."),
    Opt("trusted-proxies", count, 0, "Load balancers in front whose X-Forwarded-For is trusted for the client address (0: none)."),  # noqa: E501
    Opt("websocket-compression", boolean, False, "Accept permessage-deflate from clients (bounded: inflated messages stay under --max-payload).", flag=True),  # noqa: E501
    Opt("server-id", server_id, None, "This node's cluster id, 1-64 of [A-Za-z0-9._-]. Default: hostname-pid."),  # noqa: E501
    Opt("health-listen", endpoints, ("tcp:9090:interface=127.0.0.1",), "Endpoint of /healthz, /readyz and /metrics (twisted.web); repeatable like --listen.", repeatable=True),  # noqa: E501
    Opt("api-listen", endpoints, None, "Endpoint of the internal HTTP API for other services (off unless set; needs --api-key-file); repeatable like --listen.", repeatable=True),  # noqa: E501
    Opt("api-key-file", api_key_file, None, "API keys, one per line, each optionally followed by the comma-separated tenants it may act for (* or nothing: all)."),  # noqa: E501
    Opt("redis", redis_url, None, "Cluster mode: redis://[:pw@]host:port/db, rediss://... (TLS) or redis+sentinel://h1:p1,h2:p2/service. Default: single node, in-memory registry."),  # noqa: E501
    Opt("redis-prefix", key_prefix, "caas:", "Prefix of every Redis key and channel."),
    Opt("redis-timeout", duration, 1.0, "Bound of every Redis call."),
    Opt("lease-ttl", duration, 10.0, "Node lease lifetime: a dead node is reaped within about 1.25x this."),  # noqa: E501
    Opt("idle-timeout", duration, 300.0, "Close connections that sent no message for this long."),
    Opt("sweep-interval", duration, 60.0, "How often idle connections are swept."),
    Opt("activity-flush-interval", duration, 30.0, "How often lastActivity is written to the registry, in one batch."),  # noqa: E501
    Opt("presence-grace", duration, 5.0, "Wait this long after a user's last device left before announcing offline."),  # noqa: E501
    Opt("max-presence-subscriptions", positive_int, 200, "Users one connection may follow the presence of."),  # noqa: E501
    Opt("max-rooms-per-user", positive_int, 1000, "Rooms a user may be joined to by the API."),
    Opt("drain-period", duration, 30.0, "On SIGTERM, close connections over at most this long (systemd's TimeoutStopSec must exceed it)."),  # noqa: E501
    Opt("token-refresh-event", text, None, "If set, emit this event (with an ack) before a token expires, asking the client for a fresh one."),  # noqa: E501
    Opt("token-refresh-lead", duration, 60.0, "How long before expiry the refresh event is sent."),
)
# fmt: on
OPTIONS_BY_NAME: Mapping[str, Opt] = {opt.name: opt for opt in OPTIONS}
HMAC_ALGORITHMS = frozenset(a for a in JWS_ALGORITHMS if a.startswith("HS"))


class ParsedOptions(Protocol):
    """What :meth:`Config.from_options` needs: values by option name, and which were typed.

    :attr:`given` holds the option names explicitly given on the command line;
    the others hold their (typed) defaults and yield to env and INI file.
    """

    given: Set[str]

    def __getitem__(self, name: str, /) -> Any: ...


def _read_ini(path: str, where: str) -> dict[str, str]:
    """Return the ``[caas-socket]`` section by option name; unknown keys are errors (typos)."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except (OSError, UnicodeDecodeError, configparser.Error) as e:
        raise ConfigError(f"--config (from {where}): cannot read {path}: {e}") from None
    if not parser.has_section(SECTION):
        raise ConfigError(f"--config (from {where}): {path} has no [{SECTION}] section")
    values: dict[str, str] = {}
    for key, value in parser.items(SECTION):
        name = key.replace("_", "-")
        opt = OPTIONS_BY_NAME.get(name)
        if opt is None or not opt.in_file:
            raise ConfigError(
                f"--config (from {where}): unknown key {key!r} in [{SECTION}] of {path}"
            )
        if name in values:
            raise ConfigError(f"--config (from {where}): key {key!r} set twice in {path}")
        values[name] = value
    return values


def _merge(options: ParsedOptions, environ: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    """Pick each option's value and its source: command line > env > INI file > default.

    Empty environment variables and INI values count as unset.
    """
    config = OPTIONS_BY_NAME["config"]
    path, where = options[config.name], "command line"
    if config.name not in options.given and environ.get(config.env):
        path, where = config.parse(environ[config.env], config.env), config.env
    ini = _read_ini(path, where) if path else {}
    merged: dict[str, tuple[Any, str]] = {}
    for opt in OPTIONS:
        if opt.name in options.given:
            merged[opt.attr] = (options[opt.name], "command line")
        elif environ.get(opt.env, "").strip():
            merged[opt.attr] = (opt.parse(environ[opt.env], opt.env), opt.env)
        elif ini.get(opt.name, "").strip():
            merged[opt.attr] = (opt.parse(ini[opt.name], path), path)
        else:
            merged[opt.attr] = (opt.default, "default")
    return merged


def _read_secret(path: str, source: str) -> bytes:
    try:
        with open(path, "rb") as f:
            value = f.read().rstrip(b"\r\n")
    except OSError as e:
        raise ConfigError(f"--jwt-secret-file (from {source}): cannot read {path}: {e}") from None
    if not value:
        raise ConfigError(f"--jwt-secret-file (from {source}): {path} is empty")
    return value


def _default_server_id() -> str:
    """``hostname-pid``, squeezed into what :func:`server_id` accepts."""
    pid = str(os.getpid())
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()) or "caas"
    return f"{host[: 63 - len(pid)]}-{pid}"


def _build(merged: Mapping[str, tuple[Any, str]]) -> Config:
    """Turn merged option values into a :class:`Config`: resolve files, fill computed defaults."""
    values = {attr: value for attr, (value, _) in merged.items()}
    secret_file, file_source = merged.get("jwt_secret_file", (None, ""))
    if secret_file is not None:
        if values.get("jwt_secret") is not None:
            raise ConfigError(
                f"--jwt-secret (from {merged['jwt_secret'][1]}) and --jwt-secret-file"
                f" (from {file_source}) are mutually exclusive"
            )
        values["jwt_secret"] = _read_secret(secret_file, file_source)
    if values.get("server_id") is None:
        values["server_id"] = _default_server_id()
    fields = attrs.fields_dict(Config)
    return Config(**{attr: value for attr, value in values.items() if attr in fields})


def _check_together(config: Config) -> None:
    """Cross-field rules; run on every Config, however it was built."""
    if config.api_listen and config.api_key_file is None:
        raise ConfigError("--api-listen needs --api-key-file: the keys other services call with")
    if config.auth != "jwt":
        return
    has_public = config.jwt_public_key is not None or config.jwt_jwks is not None
    if config.jwt_secret is None and not has_public:
        raise ConfigError(
            "--auth jwt needs a key: give --jwt-secret, --jwt-secret-file,"
            " --jwt-public-key or --jwt-jwks"
        )
    hmac = [a for a in config.jwt_algorithms if a in HMAC_ALGORITHMS]
    public = [a for a in config.jwt_algorithms if a not in HMAC_ALGORITHMS]
    if hmac and config.jwt_secret is None:
        raise ConfigError(
            f"--jwt-algorithms {','.join(hmac)} needs --jwt-secret or --jwt-secret-file"
        )
    if public and not has_public:
        raise ConfigError(
            f"--jwt-algorithms {','.join(public)} needs --jwt-public-key or --jwt-jwks"
        )


@attrs.frozen
class Config:
    """Everything the service needs to know, validated, immutable, built once at startup.

    Build it with :meth:`from_options` (twistd) or :meth:`default` (tests,
    embedding); both coerce every value and check the cross-field rules.
    """

    listen: tuple[str, ...]
    auth: str
    jwt_secret: bytes | None = attrs.field(repr=False)
    jwt_public_key: str | None
    jwt_jwks: str | None
    jwt_algorithms: tuple[str, ...]
    jwt_issuer: str | None
    jwt_audience: tuple[str, ...] | None
    jwt_leeway: float
    user_claim: str
    tenant_claim: str
    max_devices: int
    device_limit_policy: str
    ping_interval: float
    ping_timeout: float
    connect_timeout: float
    max_payload: int
    max_outbound_buffer: int
    connect_rate_per_ip: float
    connect_burst_per_ip: int
    trusted_proxies: int
    websocket_compression: bool
    server_id: str
    health_listen: tuple[str, ...]
    api_listen: tuple[str, ...] | None
    api_key_file: str | None
    redis: str | None
    redis_prefix: str
    redis_timeout: float
    lease_ttl: float
    idle_timeout: float
    sweep_interval: float
    activity_flush_interval: float
    presence_grace: float
    max_presence_subscriptions: int
    max_rooms_per_user: int
    drain_period: float
    token_refresh_event: str | None
    token_refresh_lead: float

    def __attrs_post_init__(self) -> None:
        _check_together(self)

    @classmethod
    def from_options(cls, options: ParsedOptions, environ: Mapping[str, str]) -> Config:
        """Merge parsed flags with ``environ`` and the INI file they point to.

        :param options: a parsed :class:`caas_socket.tap.Options`.
        :param environ: usually :data:`os.environ`; passed in so tests need no patching.
        :raises ConfigError: naming the option and where its bad value came from.
        """
        return _build(_merge(options, environ))

    @classmethod
    def default(cls, **overrides: Any) -> Config:
        """A valid Config without any Options, for tests and embedding.

        Overrides are Config field names and go through the same coercion and
        checks as flags. ``auth`` defaults to ``"jwt"`` when a key
        (``jwt_secret``, ``jwt_public_key`` or ``jwt_jwks``) is given, else
        ``"none"``, so ``Config.default()`` works and a given key is never ignored.
        """
        unknown = set(overrides) - set(attrs.fields_dict(cls))
        if unknown:
            raise TypeError(f"Config.default() got unknown fields: {', '.join(sorted(unknown))}")
        keys = ("jwt_secret", "jwt_public_key", "jwt_jwks")
        has_key = any(overrides.get(k) is not None for k in keys)
        overrides.setdefault("auth", "jwt" if has_key else "none")
        merged: dict[str, tuple[Any, str]] = {}
        for opt in OPTIONS:
            value = overrides.get(opt.attr)
            if value is None:
                merged[opt.attr] = (opt.default, "default")
            else:
                merged[opt.attr] = (opt.parse(value, "Config.default"), "Config.default")
        return _build(merged)
