"""``caas-socketctl``: the operator's command line.

Subcommands print human-readable output by default and JSON with ``--json``
(on stdout; messages go to stderr).  Exit status: 0 done, 1 failed (Redis
unreachable, nobody received a command), 2 bad usage, 3 ``check`` found
problems and left them.

Those that read or write the cluster run on Twisted with the nodes' own
Redis code (:mod:`caas_socket.redis_connection`, the registry's scripts, the
command client), so they accept the same URLs (TLS, Sentinel) and can never
disagree with the nodes about a key or a command.  A CLI is a program, not
library code: it may run the global reactor, through ``task.react``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

from .app.commands import CommandError
from .auth import mint_token
from .config import duration, key_prefix

__all__ = ["build_parser", "main"]

DESCRIPTION = """\
The operator's command line of caas-socket: a user's devices, kicks and test
events through the command channel, cluster nodes and their leases, a
registry check, development tokens.  Output is for humans; --json prints one
JSON document on stdout for scripts.
"""
EPILOG = """\
The Redis options may come before or after the subcommand; the environment
gives CAAS_REDIS, CAAS_REDIS_PREFIX and CAAS_REDIS_TIMEOUT (flags win).
Exit status: 0 done, 1 failed, 2 bad usage, 3 check found problems.
"""


def _read_secret(args: argparse.Namespace) -> bytes:
    if args.secret_file:
        with open(args.secret_file, "rb") as f:
            return f.read().rstrip(b"\r\n")
    if args.secret:
        return str(args.secret).encode()
    raise SystemExit("caas-socketctl token: give --secret-file or --secret (or CAAS_JWT_SECRET)")


def _token(args: argparse.Namespace) -> int:
    secret = _read_secret(args)
    try:
        token = mint_token(
            secret,
            algorithm=args.algorithm,
            sub=args.sub,
            tenant_id=args.tenant,
            ttl=args.ttl,
            tenant_claim=args.tenant_claim,
        )
    except ValueError as e:
        print(f"caas-socketctl token: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"token": token, "sub": args.sub, "tenant": args.tenant, "ttl": args.ttl}))
    else:
        print(token)
    return 0


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not JSON ({e}): {text!r}") from None


def _typed(convert: Any) -> Any:
    """Reuse the server's option checks; argparse shows their message."""

    def check(text: str) -> Any:
        try:
            return convert(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    check.__name__ = convert.__name__
    return check


def _common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """Options every subcommand takes, before or after its name.

    Under a subcommand they default to SUPPRESS, so one given before the
    subcommand is not overwritten by the subparser's default.
    """
    quiet: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    parser.add_argument("--json", action="store_true", help="machine-readable output", **quiet)
    group = parser.add_argument_group("Redis (for every subcommand but token)")
    group.add_argument(
        "--redis", metavar="URL", help="the nodes' --redis (env CAAS_REDIS)", **quiet
    )
    group.add_argument(
        "--redis-prefix",
        metavar="PREFIX",
        type=_typed(key_prefix),
        help="the nodes' --redis-prefix (env CAAS_REDIS_PREFIX; default caas:)",
        **quiet,
    )
    group.add_argument(
        "--redis-timeout",
        metavar="DURATION",
        type=_typed(duration),
        help="bound of connecting and of each call (env CAAS_REDIS_TIMEOUT; default 2s)",
        **quiet,
    )


def _redis_commands(commands: Any) -> None:
    from . import ctl_commands as run

    def add(name: str, help: str, handler: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(
            name, help=help, description=help, epilog=EPILOG
        )
        _common(parser, top=False)
        parser.set_defaults(run=handler, needs_redis=True)
        return parser

    devices = add(
        "devices", "a user's connections, their nodes, and whether those nodes live", run.devices
    )
    devices.add_argument("tenant")
    devices.add_argument("user")

    kick = add("kick", "disconnect a user (or one device) on every node", run.kick)
    kick.add_argument("tenant")
    kick.add_argument("user")
    kick.add_argument("--device", help="only this device")
    kick.add_argument("--reason", default="kicked", help='sent in caas:kicked (default "kicked")')
    kick.add_argument(
        "--reconnect", action="store_true", help="close the transport only: the client comes back"
    )

    emit = add("emit", "send a test event to a user (or one device)", run.emit)
    emit.add_argument("tenant")
    emit.add_argument("user")
    emit.add_argument("event")
    emit.add_argument("--device", help="only this device")
    emit.add_argument("--data", type=_json_value, help="the payload, as JSON")

    room = add("emit-room", "send a test event to a room of a tenant", run.emit_room)
    room.add_argument("tenant")
    room.add_argument("room")
    room.add_argument("event")
    room.add_argument("--data", type=_json_value, help="the payload, as JSON")

    add("nodes", "cluster nodes: lease state, TTL left, generation, entries", run.nodes)

    check = add("check", "compare the registry with the live nodes (a dry run)", run.check)
    check.add_argument(
        "--purge",
        action="store_true",
        help="reap nodes whose lease expired, with the nodes' own fenced script",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="caas-socketctl", description=DESCRIPTION, epilog=EPILOG)
    _common(parser, top=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    token = commands.add_parser("token", help="mint a development token (HS*)")
    token.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    token.add_argument("--secret-file", help="file holding the HS secret (as --jwt-secret-file)")
    token.add_argument(
        "--secret",
        default=None,
        help="the HS secret itself (visible in ps; prefer --secret-file or CAAS_JWT_SECRET)",
    )
    token.add_argument("--sub", required=True, help="user id (the user claim)")
    token.add_argument("--tenant", required=True, help="tenant id (the tenant claim)")
    token.add_argument("--tenant-claim", default="tenantId", help="name of the tenant claim")
    token.add_argument("--algorithm", default="HS256", help="HS256, HS384 or HS512")
    token.add_argument("--ttl", type=float, default=3600.0, help="lifetime in seconds")
    token.set_defaults(run=_token, needs_redis=False)
    _redis_commands(commands)
    return parser


def _fail(args: argparse.Namespace, message: str, status: int = 1) -> int:
    print(f"caas-socketctl {args.command}: {message}", file=sys.stderr)
    return status


def _settings(args: argparse.Namespace, environ: Mapping[str, str]) -> str | None:
    """Fill the Redis options from the environment; the error message, if any."""
    args.redis = args.redis or environ.get("CAAS_REDIS")
    if not args.redis:
        return "no Redis given: pass --redis URL or set CAAS_REDIS"
    for name, convert, default in (
        ("redis_prefix", key_prefix, "caas:"),
        ("redis_timeout", duration, "2s"),
    ):
        if getattr(args, name) is None:
            variable = "CAAS_" + name.upper()
            try:
                setattr(args, name, convert(environ.get(variable, default)))
            except ValueError as e:
                return f"{variable}: {e}"
    return None


async def _with_redis(reactor: Any, url: Any, args: argparse.Namespace) -> int:
    from .client import TwistedCommandClient
    from .ctl_commands import Context
    from .ctl_registry import RegistryInspector
    from .redis_connection import connect
    from .registry.interfaces import RegistryUnavailable

    timeout = args.redis_timeout
    try:
        redis = await connect(url, reactor, pool_size=4, timeout=timeout)
    except RegistryUnavailable as e:
        return _fail(args, f"cannot reach Redis at {url.redacted()} (check --redis): {e}")
    except ValueError as e:  # an unreadable ?ca= file
        return _fail(args, str(e), 2)
    try:
        context = Context(
            inspector=RegistryInspector(redis, reactor, prefix=args.redis_prefix, timeout=timeout),
            client=TwistedCommandClient(redis, prefix=args.redis_prefix, timeout=timeout),
            json=args.json,
            now_ms=int(time.time() * 1000),
        )
        status: int = await args.run(context, args)
        return status
    except CommandError as e:
        return _fail(args, f"invalid command ({e.code}): {e.message}", 2)
    except RegistryUnavailable as e:
        return _fail(args, f"Redis at {url.redacted()} failed: {e}")
    except Exception:
        traceback.print_exc()
        return _fail(args, "unexpected error (traceback above)")
    finally:
        await redis.disconnect()


def _run_with_redis(args: argparse.Namespace) -> int:
    from twisted.internet import task
    from twisted.internet.defer import Deferred

    from .redis_connection import RedisURL

    try:
        url = RedisURL.parse(args.redis)
    except ValueError as e:  # the message names --redis and hides the password
        return _fail(args, str(e), 2)
    status = [1]

    async def run(reactor: Any) -> None:
        status[0] = await _with_redis(reactor, url, args)

    with contextlib.suppress(SystemExit):  # react always exits; the status is ours
        task.react(lambda reactor: Deferred.fromCoroutine(run(reactor)))
    return status[0]


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Entry point of ``caas-socketctl``."""
    environ = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    if not args.needs_redis:
        if getattr(args, "secret", None) is None and "CAAS_JWT_SECRET" in environ:
            args.secret = environ["CAAS_JWT_SECRET"]
        status: int = args.run(args)
        return status
    problem = _settings(args, environ)
    if problem is not None:
        return _fail(args, problem, 2)
    return _run_with_redis(args)


if __name__ == "__main__":
    raise SystemExit(main())
