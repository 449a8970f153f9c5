"""The two :class:`TokenVerifier` implementations: signed JWTs, and dev mode (``--auth none``)."""

from __future__ import annotations

import base64
import json
import math
import re
import time
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jwt
from jwt.algorithms import HMACAlgorithm

from caas_socket.auth.keys import MAX_KID, SUPPORTED_ALGORITHMS, Key, KeySet
from caas_socket.auth.principal import CLAIM_TEXT, MAX_CLAIM, AuthError, Principal, show

MAX_KIDLESS_TRIES = 8  # a token without a kid costs at most this many signature checks
_UNTRUSTED_ERRORS = (jwt.PyJWTError, ValueError, TypeError, RecursionError)
_DEV_USER = re.compile(r"[A-Za-z0-9._:@-]{1,64}", re.ASCII)
_DEV_MAX_TOKEN = 8192


class _PreparedHMAC(HMACAlgorithm):
    """PyJWT's HMAC, preparing each key once instead of on every token.

    PyJWT re-validates the secret on every decode (PEM, DER and JWK sniffing, a
    JSON parse that fails by design): a third of a token's verification.  Our
    secrets are validated once, when the key set is built.
    """

    def __init__(self, hash_alg: Any) -> None:
        super().__init__(hash_alg)
        self._prepared: dict[Any, bytes] = {}

    def prepare_key(self, key: Any) -> bytes:
        prepared = self._prepared.get(key)
        if prepared is None:
            prepared = super().prepare_key(key)
            if len(self._prepared) < 64:  # only configured keys ever come here
                self._prepared[key] = prepared
        return prepared


_B64URL = re.compile(rb"[A-Za-z0-9_-]*")


class _JWS(jwt.PyJWS):
    """PyJWS, with its base64url segment check done by a regex instead of a loop.

    The same rules as PyJWT's (optional ``=`` padding, no junk, canonical
    encoding only), which checks the alphabet one character at a time in
    Python: most of the cost of reading a token.
    """

    @staticmethod
    def _decode_base64url_segment(segment: bytes, name: str) -> bytes:
        stripped = segment.rstrip(b"=")
        padding = len(segment) - len(stripped)
        if (
            padding > 2
            or (padding and len(segment) % 4)
            or len(stripped) % 4 == 1
            or _B64URL.fullmatch(stripped) is None
        ):
            raise jwt.DecodeError(f"Invalid {name} padding")
        decoded = base64.urlsafe_b64decode(stripped + b"=" * (-len(stripped) % 4))
        if base64.urlsafe_b64encode(decoded).rstrip(b"=") != stripped:
            raise jwt.DecodeError(f"Invalid {name} padding")
        return decoded


def _signature_checker() -> jwt.PyJWS:
    jws = _JWS(options={"verify_signature": True, "enforce_minimum_key_length": True})
    for name, hash_alg in (
        ("HS256", HMACAlgorithm.SHA256),
        ("HS384", HMACAlgorithm.SHA384),
        ("HS512", HMACAlgorithm.SHA512),
    ):
        jws.unregister_algorithm(name)
        jws.register_algorithm(name, _PreparedHMAC(hash_alg))
    return jws


class ConfigError(ValueError):
    """A bad constructor argument; ``param`` lets :func:`build_verifier` name the CLI option."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param, self.message = param, message


def checked_algorithms(algorithms: Sequence[str]) -> tuple[str, ...]:
    """The allow-list; ``none`` is refused here so no configuration can accept unsigned tokens."""
    algs = (algorithms,) if isinstance(algorithms, str) else tuple(algorithms)
    if not algs:
        raise ConfigError("algorithms", "at least one algorithm is required")
    for alg in algs:
        if not isinstance(alg, str) or alg.strip().lower() == "none":
            raise ConfigError("algorithms", f"{show(alg)} is never allowed")
        if alg not in SUPPORTED_ALGORITHMS:
            supported = ", ".join(sorted(SUPPORTED_ALGORITHMS))
            raise ConfigError("algorithms", f"unsupported {show(alg)}; use one of {supported}")
    return algs


def _token_text(token: object, max_bytes: int) -> str:
    """Shape checks before any parsing, so a hostile payload costs next to nothing."""
    if token is None or (isinstance(token, str) and not token):
        raise AuthError("missing_token", "no token in the CONNECT auth payload")
    if not isinstance(token, str):
        raise AuthError("malformed_token", f"token must be a string, not {type(token).__name__}")
    size = len(token)  # characters <= UTF-8 bytes: only non-ASCII text needs encoding to count
    if size <= max_bytes and not token.isascii():
        size = len(token.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise AuthError("token_too_large", f"token has more than {max_bytes} bytes")
    if not token.isascii():
        raise AuthError("malformed_token", "token contains non-ASCII characters")
    return token


def _claim_text(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    if value is None or value == "":
        raise AuthError("missing_claim", f"claim {show(name)} is absent or empty")
    if not isinstance(value, str) or not CLAIM_TEXT.fullmatch(value):
        message = f"claim {show(name)} must be 1..{MAX_CLAIM} characters without controls"
        raise AuthError("invalid_claim", message)
    return value


def _time_claim(claims: Mapping[str, Any], name: str) -> float | None:
    """A NumericDate: bools, strings and infinities are refused, not coerced as ``int()`` would."""
    if name not in claims:
        return None
    value = claims[name]
    try:
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    except OverflowError:  # an int too big for a float
        pass
    raise AuthError("invalid_claim", f"claim {name} must be a finite number")


class JWTVerifier:
    """Verifies signed JWTs; time comes from ``now``, so expiry is exact under test.

    PyJWT checks the signature only; exp/nbf/iss/aud are checked here with the injected clock.
    ``aud`` is checked only when ``audience`` is configured; ``iat`` is only type-checked.
    A token ``kid`` selects keys with that id; keys without one (secret, PEM) answer any kid.
    """

    def __init__(
        self,
        *,
        keys: KeySet,
        algorithms: Sequence[str] = ("HS256",),
        issuer: str | None = None,
        audience: Sequence[str] | None = None,
        leeway: float = 0.0,
        user_claim: str = "sub",
        tenant_claim: str = "tenantId",
        now: Callable[[], float] = time.time,
        max_token_bytes: int = 8192,
    ) -> None:
        self._algorithms = checked_algorithms(algorithms)
        for alg in self._algorithms:
            if not any(key.fits(alg) for key in keys.keys):
                raise ConfigError("algorithms", f"no key in the key set can verify {alg}")
        if issuer is not None and not (isinstance(issuer, str) and issuer):
            raise ConfigError("issuer", "must be a non-empty string or None")
        if isinstance(audience, str):
            audience = (audience,)
        if audience is not None and not (
            audience and all(isinstance(a, str) and a for a in audience)
        ):
            raise ConfigError("audience", "must be a non-empty list of strings, or None")
        if not (isinstance(leeway, int | float) and 0 <= leeway < math.inf):
            raise ConfigError("leeway", "must be a finite number of seconds >= 0")
        for param, claim in (("user_claim", user_claim), ("tenant_claim", tenant_claim)):
            if not (isinstance(claim, str) and claim):
                raise ConfigError(param, "must be a non-empty string")
        if max_token_bytes < 1:
            raise ConfigError("max_token_bytes", "must be positive")
        self._keys, self._issuer, self._leeway = keys.keys, issuer, float(leeway)
        self._audience = None if audience is None else frozenset(audience)
        self._user_claim, self._tenant_claim = user_claim, tenant_claim
        self._now, self._max_bytes = now, max_token_bytes
        self._by_kid: dict[str, list[Key]] = {}
        for key in self._keys:
            if key.kid is not None:
                self._by_kid.setdefault(key.kid, []).append(key)
        # PyJWS checks the signature only; every claim is checked here.
        self._jws = _signature_checker()

    def verify(self, token: object) -> Principal:
        """:raises AuthError: for the first failed check, cheapest checks first."""
        text = _token_text(token, self._max_bytes)
        try:
            header = self._jws.get_unverified_header(text)
        except _UNTRUSTED_ERRORS:
            raise AuthError("malformed_token", "undecodable JWT header") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise AuthError("invalid_algorithm", f"alg {show(alg)} is not in the allow-list")
        claims = self._signed_claims(text, alg, self._candidates(header, alg))
        return self._principal(claims)

    def _candidates(self, header: Mapping[str, Any], alg: str) -> list[Key]:
        if "kid" not in header:
            return [key for key in self._keys if key.fits(alg)][:MAX_KIDLESS_TRIES]
        kid = header["kid"]
        if not (isinstance(kid, str) and 0 < len(kid) <= MAX_KID):
            raise AuthError("malformed_token", f"kid must be a string of 1..{MAX_KID} characters")
        named = self._by_kid.get(kid)  # a kid is only ever a dict key: never a path, never a URL
        if named is None:
            anonymous = [key for key in self._keys if key.kid is None and key.fits(alg)]
            if not anonymous:
                raise AuthError("unknown_key", f"no key with kid {show(kid)}")
            return anonymous[:MAX_KIDLESS_TRIES]
        fitting = [key for key in named if key.fits(alg)]
        if not fitting:
            raise AuthError("invalid_algorithm", f"key {show(kid)} cannot verify {alg}")
        return fitting

    def _signed_claims(self, text: str, alg: str, candidates: list[Key]) -> dict[str, Any]:
        if not candidates:
            raise AuthError("unknown_key", f"no key can verify {alg}")
        for key in candidates:
            try:
                payload = self._jws.decode(text, key=key.material, algorithms=[alg])
                claims = json.loads(payload)
                if not isinstance(claims, dict):
                    raise AuthError("malformed_token", "the JWT payload is not a JSON object")
                return claims
            except jwt.InvalidSignatureError:
                continue
            except jwt.InvalidAlgorithmError:
                raise AuthError("invalid_algorithm", f"PyJWT refused {alg}") from None
            except _UNTRUSTED_ERRORS as error:
                detail = f"undecodable JWT ({type(error).__name__})"
                raise AuthError("malformed_token", detail) from None
        detail = f"{alg} signature matches none of {len(candidates)} candidate key(s)"
        raise AuthError("invalid_signature", detail)

    def _principal(self, claims: dict[str, Any]) -> Principal:
        exp, nbf = _time_claim(claims, "exp"), _time_claim(claims, "nbf")
        _time_claim(claims, "iat")
        now, leeway = self._now(), self._leeway
        if exp is not None and now >= exp + leeway:
            raise AuthError("expired", f"expired at {exp}, now {now}, leeway {leeway}s")
        if nbf is not None and now + leeway < nbf:
            raise AuthError("not_yet_valid", f"valid from {nbf}, now {now}, leeway {leeway}s")
        if self._issuer is not None and claims.get("iss") != self._issuer:
            detail = f"iss {show(claims.get('iss'))} is not the configured issuer"
            raise AuthError("invalid_issuer", detail)
        if self._audience is not None:
            aud = claims.get("aud")
            auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
            if not any(isinstance(a, str) and a in self._audience for a in auds):
                raise AuthError("invalid_audience", f"aud {show(aud)} names no accepted audience")
        user = _claim_text(claims, self._user_claim)
        tenant = _claim_text(claims, self._tenant_claim)
        return Principal(user, tenant, exp, types.MappingProxyType(claims))


def _loose_text(value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**18:
        value = str(value)
    return value if isinstance(value, str) and CLAIM_TEXT.fullmatch(value) else None


class DevModeVerifier:
    """``--auth none``: everyone gets in, so developers can connect with any token or none.

    A JWT's claims are read without verification; a short safe non-JWT token is taken as the
    user id. Dev sessions never expire (``expires_at`` is None), whatever the token says.
    """

    def __init__(
        self,
        *,
        user_claim: str = "sub",
        tenant_claim: str = "tenantId",
        default_tenant: str = "dev",
    ) -> None:
        if not (isinstance(default_tenant, str) and CLAIM_TEXT.fullmatch(default_tenant)):
            raise ValueError("default_tenant: must be 1..256 characters without controls")
        self._user_claim, self._tenant_claim = user_claim, tenant_claim
        self._default_tenant = default_tenant

    def verify(self, token: object) -> Principal:
        """Never raises: unusable claims fall back to ``"anonymous"`` and the default tenant."""
        claims: dict[str, Any] = {}
        text = token if isinstance(token, str) and len(token) <= _DEV_MAX_TOKEN else None
        is_jwt = text is not None and text.count(".") == 2
        if text is not None and is_jwt:
            try:
                claims = jwt.decode(text, options={"verify_signature": False})
            except _UNTRUSTED_ERRORS:
                is_jwt = False
        plain = text if text is not None and not is_jwt and _DEV_USER.fullmatch(text) else None
        user = _loose_text(claims.get(self._user_claim)) or plain or "anonymous"
        tenant = _loose_text(claims.get(self._tenant_claim)) or self._default_tenant
        return Principal(user, tenant, None, types.MappingProxyType(claims))
