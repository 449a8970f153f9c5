"""Command-line entry points: a verifier from configuration, tokens for the dev-token command."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import jwt

from caas_socket.auth.keys import (
    EC_CURVES,
    HMAC_MIN_BYTES,
    RSA_ALGORITHMS,
    SUPPORTED_ALGORITHMS,
    KeySet,
)
from caas_socket.auth.principal import TokenVerifier, show
from caas_socket.auth.verifiers import ConfigError, DevModeVerifier, JWTVerifier, checked_algorithms

_OPTIONS = {
    "algorithms": "--jwt-algorithms",
    "issuer": "--jwt-issuer",
    "audience": "--jwt-audience",
    "leeway": "--jwt-leeway",
    "user_claim": "--user-claim",
    "tenant_claim": "--tenant-claim",
}
_PUBLIC = "in --jwt-public-key or --jwt-jwks"


def _needs(alg: str) -> str:
    if alg in HMAC_MIN_BYTES:
        return f"--jwt-secret or --jwt-secret-file (at least {HMAC_MIN_BYTES[alg]} bytes)"
    if alg in RSA_ALGORITHMS:
        return f"an RSA public key {_PUBLIC}"
    if alg in EC_CURVES:
        return f"an EC {EC_CURVES[alg].name} public key {_PUBLIC}"
    return f"an Ed25519/Ed448 public key {_PUBLIC}"


def build_verifier(
    *,
    mode: str,
    secret: bytes | None,
    public_key_file: str | None,
    jwks_file: str | None,
    algorithms: Sequence[str],
    issuer: str | None,
    audience: Sequence[str] | None,
    leeway: float,
    user_claim: str,
    tenant_claim: str,
    now: Callable[[], float] = time.time,
) -> TokenVerifier:
    """The verifier for ``--auth``, failing at startup rather than at the first CONNECT.

    An empty ``audience`` means "not configured", as an absent option does.

    :raises ValueError: naming the offending option; never containing the secret.
    """
    if mode == "none":
        return DevModeVerifier(user_claim=user_claim, tenant_claim=tenant_claim)
    if mode != "jwt":
        raise ValueError(f"--auth: unknown mode {mode!r} (expected 'jwt' or 'none')")
    sources: list[tuple[str, Callable[[Any], KeySet], object]] = [
        ("--jwt-secret", KeySet.from_secret, secret),
        ("--jwt-public-key", KeySet.from_pem_file, public_key_file),
        ("--jwt-jwks", KeySet.from_jwks_file, jwks_file),
    ]
    sets = []
    for option, load, source in sources:
        if source is not None:
            try:
                sets.append(load(source))
            except (OSError, ValueError) as error:
                raise ValueError(f"{option}: {error}") from None
    keys = KeySet.combine(*sets)
    try:
        algs = checked_algorithms(algorithms)
        for alg in algs:
            if not any(key.fits(alg) for key in keys.keys):
                raise ConfigError("algorithms", f"{alg} needs {_needs(alg)}")
        return JWTVerifier(
            keys=keys,
            algorithms=algs,
            issuer=issuer,
            audience=audience or None,
            leeway=leeway,
            user_claim=user_claim,
            tenant_claim=tenant_claim,
            now=now,
        )
    except ConfigError as error:
        raise ValueError(f"{_OPTIONS.get(error.param, error.param)}: {error.message}") from None


def mint_token(
    key: Any,
    *,
    algorithm: str = "HS256",
    sub: str,
    tenant_id: str,
    ttl: float | None = 3600,
    now: Callable[[], float] = time.time,
    kid: str | None = None,
    tenant_claim: str = "tenantId",
    **extra: Any,
) -> str:
    """Sign a token for the dev-token command and tests; ``extra`` claims override the defaults.

    :param key: an HMAC secret (bytes) or a private key (key object or PEM).
    :param ttl: seconds until ``exp``; None omits ``exp``.
    :raises ValueError: for ``none`` or any algorithm a verifier would not accept.
    """
    if algorithm not in SUPPORTED_ALGORITHMS:
        raise ValueError(f"algorithm: {show(algorithm)} is not supported (and 'none' never is)")
    issued = now()
    payload: dict[str, Any] = {"sub": sub, tenant_claim: tenant_id, "iat": int(issued)}
    if ttl is not None:
        payload["exp"] = int(issued + ttl)
    payload.update(extra)
    headers = None if kid is None else {"kid": kid}
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)
