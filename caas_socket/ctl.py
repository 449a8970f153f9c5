"""``caas-socketctl``: the operator's command line.

Subcommands print human-readable output by default and JSON with ``--json``;
they exit non-zero on failure.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from .auth import mint_token

__all__ = ["main"]


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="caas-socketctl", description=__doc__)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    commands = parser.add_subparsers(dest="command", required=True)

    token = commands.add_parser("token", help="mint a development token (HS*)")
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
    token.set_defaults(run=_token)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``caas-socketctl``."""
    import os

    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "secret", None) is None and "CAAS_JWT_SECRET" in os.environ:
        args.secret = os.environ["CAAS_JWT_SECRET"]
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
