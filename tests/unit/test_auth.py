"""Tests for caas_socket.auth: real keys, a fixed clock, one table per concern, no mocks."""

from __future__ import annotations

import base64
import datetime
import hmac
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from caas_socket.auth import (
    CLIENT_MESSAGE,
    FAILURE_CODES,
    AuthError,
    DevModeVerifier,
    JWTVerifier,
    KeySet,
    Principal,
    TokenVerifier,
    build_verifier,
    mint_token,
    validate_device_id,
)

NOW = 1_700_000_000.0
SECRET = b"a-shared-secret-of-more-than-32-bytes"
OTHER_SECRET = b"another-secret-that-is-long-enough!!"
SECRET64 = b"0123456789abcdef" * 4
SECRETS = (SECRET, OTHER_SECRET, SECRET64)
DROP = object()  # a claim value meaning "leave this claim out"


def clock() -> float:
    return NOW


# --- keys and files -------------------------------------------------------------------------


@attrs.frozen
class Keys:
    rsa: rsa.RSAPrivateKey
    rsa_other: rsa.RSAPrivateKey
    ec: ec.EllipticCurvePrivateKey
    ec384: ec.EllipticCurvePrivateKey
    ed: ed25519.Ed25519PrivateKey
    ed_other: ed25519.Ed25519PrivateKey


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys(
        rsa=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        rsa_other=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec=ec.generate_private_key(ec.SECP256R1()),
        ec384=ec.generate_private_key(ec.SECP384R1()),
        ed=ed25519.Ed25519PrivateKey.generate(),
        ed_other=ed25519.Ed25519PrivateKey.generate(),
    )


def public_pem(private: Any) -> bytes:
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def private_pem(private: Any) -> bytes:
    return private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def certificate_pem(private: Any) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer")])
    start = datetime.datetime(2023, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=3650))
        .sign(private, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def jwk(private: Any, **fields: Any) -> dict[str, Any]:
    public = private.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        entry = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        entry = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        entry = OKPAlgorithm.to_jwk(public, as_dict=True)
    return {**entry, **fields}


def write(directory: Path, name: str, data: bytes | str | dict[str, Any]) -> str:
    path = directory / name
    if isinstance(data, dict):
        data = json.dumps(data)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(path)


def pem_keyset(directory: Path, private: Any) -> KeySet:
    return KeySet.from_pem_file(write(directory, "key.pem", public_pem(private)))


def jwks_keyset(directory: Path, *entries: dict[str, Any]) -> KeySet:
    return KeySet.from_jwks_file(write(directory, "jwks.json", {"keys": list(entries)}))


# --- tokens ---------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**overrides: Any) -> dict[str, Any]:
    base = {"sub": "alice", "tenantId": "acme", "iat": int(NOW), "exp": int(NOW) + 3600}
    merged = {**base, **overrides}
    return {name: value for name, value in merged.items() if value is not DROP}


def token(key: Any, alg: str = "HS256", *, kid: str | None = None, **overrides: Any) -> str:
    headers = None if kid is None else {"kid": kid}
    return jwt.encode(claims(**overrides), key, algorithm=alg, headers=headers)


def raw_token(header: Any, payload: Any, secret: Any = SECRET) -> str:
    """A token built by hand, for what PyJWT refuses to produce (alg none, key confusion...).

    :param secret: HMAC-SHA256 key (bytes), an RSA private key (RS256), or None (unsigned).
    """
    encode = lambda part: part if isinstance(part, bytes) else json.dumps(part).encode()  # noqa: E731
    signing_input = f"{b64(encode(header))}.{b64(encode(payload))}"
    if secret is None:
        signature = b""
    elif isinstance(secret, bytes):
        signature = hmac.digest(secret, signing_input.encode(), "sha256")
    else:
        signature = RSAAlgorithm(RSAAlgorithm.SHA256).sign(signing_input.encode(), secret)
    return f"{signing_input}.{b64(signature)}"


def verifier(keyset: KeySet | None = None, **options: Any) -> JWTVerifier:
    return JWTVerifier(keys=keyset or KeySet.from_secret(SECRET), now=clock, **options)


def assert_safe(error: AuthError, tok: object) -> None:
    """What we log and send never carries the token, its signature, or a secret."""
    assert error.code in FAILURE_CODES
    assert error.to_client() == {"message": CLIENT_MESSAGE, "data": {"code": error.code}}
    for text in (error.detail, str(error), repr(error)):
        # Short tokens may be ordinary words of the message ("AuthError"); real
        # tokens are long, and those must never show.
        if isinstance(tok, str) and len(tok) >= 20:
            assert tok not in text
            signature = tok.rsplit(".", 1)[-1]
            assert len(signature) < 8 or signature not in text
        for secret in SECRETS:
            assert secret.decode() not in text


def refused(v: TokenVerifier, tok: object, code: str) -> AuthError:
    with pytest.raises(AuthError) as info:
        v.verify(tok)
    assert info.value.code == code, info.value.detail
    assert_safe(info.value, tok)
    return info.value


# --- good tokens ----------------------------------------------------------------------------

GOOD = [
    ("HS256", "secret"),
    ("HS512", "secret64"),
    ("RS256", "rsa-pem"),
    ("RS256", "rsa-certificate"),
    ("PS256", "rsa-jwks"),
    ("ES256", "ec-pem"),
    ("ES256", "ec-jwks"),
    ("ES384", "ec384-pem"),
    ("EdDSA", "ed-pem"),
    ("EdDSA", "ed-jwks"),
]


def signing_setup(keys: Keys, directory: Path, source: str) -> tuple[Any, KeySet, str | None]:
    """(signing key, key set, kid) for a key source named in the GOOD table."""
    if source == "secret":
        return SECRET, KeySet.from_secret(SECRET), None
    if source == "secret64":
        return SECRET64, KeySet.from_secret(SECRET64), None
    name, kind = source.split("-")
    private = getattr(keys, name)
    if kind == "pem":
        return private, pem_keyset(directory, private), None
    if kind == "certificate":
        path = write(directory, "cert.pem", certificate_pem(private))
        return private, KeySet.from_pem_file(path), None
    return private, jwks_keyset(directory, jwk(private, kid=f"{name}-1")), f"{name}-1"


@pytest.mark.parametrize(("alg", "source"), GOOD, ids=[f"{a}-{s}" for a, s in GOOD])
def test_good_token_is_accepted(keys: Keys, tmp_path: Path, alg: str, source: str) -> None:
    signing_key, keyset, kid = signing_setup(keys, tmp_path, source)
    principal = verifier(keyset, algorithms=(alg,)).verify(token(signing_key, alg, kid=kid))
    assert principal == Principal("alice", "acme", NOW + 3600, {})
    assert principal.claims["sub"] == "alice"
    with pytest.raises(TypeError):
        principal.claims["sub"] = "mallory"  # type: ignore[index]


def test_principal_repr_hides_claims_and_equality_ignores_them() -> None:
    one = Principal("u", "t", None, {"secret": "x"})
    assert "secret" not in repr(one)
    assert one == Principal("u", "t", None, {})


def test_token_without_exp_has_no_expiry() -> None:
    assert verifier().verify(token(SECRET, exp=DROP)).expires_at is None


# --- time -----------------------------------------------------------------------------------

TIME = [
    # claims, leeway, expected code (None: accepted)
    ({"exp": NOW - 1}, 0, "expired"),
    ({"exp": NOW}, 0, "expired"),
    ({"exp": NOW + 1}, 0, None),
    ({"exp": NOW - 5}, 10, None),
    ({"exp": NOW - 10}, 10, "expired"),
    ({"nbf": NOW + 60}, 0, "not_yet_valid"),
    ({"nbf": NOW + 5}, 10, None),
    ({"nbf": NOW}, 0, None),
    ({"exp": NOW + 0.5}, 0, None),
    ({"exp": 10**30}, 0, None),
    ({"exp": str(int(NOW) + 60)}, 0, "invalid_claim"),
    ({"exp": True}, 0, "invalid_claim"),
    ({"exp": None}, 0, "invalid_claim"),
    ({"exp": float("inf")}, 0, "invalid_claim"),
    ({"exp": 10**400}, 0, "invalid_claim"),
    ({"nbf": [1]}, 0, "invalid_claim"),
    ({"iat": "yesterday"}, 0, "invalid_claim"),
    ({"iat": NOW + 10**6}, 0, None),  # iat is only type-checked
]


@pytest.mark.parametrize(("overrides", "leeway", "code"), TIME)
def test_time_claims(overrides: dict[str, Any], leeway: float, code: str | None) -> None:
    v, tok = verifier(leeway=leeway), token(SECRET, **overrides)
    if code is None:
        assert v.verify(tok).user_id == "alice"
    else:
        refused(v, tok, code)


def test_clock_is_read_at_each_verification() -> None:
    times = [NOW, NOW + 3600]
    v = JWTVerifier(keys=KeySet.from_secret(SECRET), now=lambda: times[0])
    tok = token(SECRET)
    assert v.verify(tok).expires_at == NOW + 3600
    times.pop(0)
    refused(v, tok, "expired")


# --- signatures and algorithms --------------------------------------------------------------


def test_wrong_key_is_refused(keys: Keys, tmp_path: Path) -> None:
    refused(verifier(), token(OTHER_SECRET), "invalid_signature")
    v = verifier(pem_keyset(tmp_path, keys.rsa), algorithms=("RS256",))
    refused(v, token(keys.rsa_other, "RS256"), "invalid_signature")
    v = verifier(pem_keyset(tmp_path, keys.ed), algorithms=("EdDSA",))
    refused(v, token(keys.ed_other, "EdDSA"), "invalid_signature")


UNSIGNED_HEADERS = [
    {"alg": "none", "typ": "JWT"},
    {"alg": "None"},
    {"alg": "NONE"},
    {"alg": ""},
    {"typ": "JWT"},
    {"alg": ["HS256"]},
    {"alg": None},
]


@pytest.mark.parametrize("header", UNSIGNED_HEADERS, ids=str)
def test_unsigned_or_algless_token_is_refused(header: dict[str, Any]) -> None:
    refused(verifier(), raw_token(header, claims(), secret=None), "invalid_algorithm")
    refused(verifier(), raw_token(header, claims()), "invalid_algorithm")


def test_pyjwt_none_token_is_refused() -> None:
    refused(verifier(), jwt.encode(claims(), None, algorithm="none"), "invalid_algorithm")


@pytest.mark.parametrize("algorithms", [("none",), ("HS256", "none"), ("None",), (" NONE ",)])
def test_none_in_allow_list_is_refused_at_construction(algorithms: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="never allowed"):
        verifier(algorithms=algorithms)


def test_algorithm_outside_allow_list_is_refused(keys: Keys, tmp_path: Path) -> None:
    both = KeySet.combine(KeySet.from_secret(SECRET64), pem_keyset(tmp_path, keys.rsa))
    v = verifier(both, algorithms=("HS256",))
    refused(v, token(SECRET64, "HS384"), "invalid_algorithm")
    refused(v, token(SECRET64, "HS512"), "invalid_algorithm")
    refused(v, token(keys.rsa, "RS256"), "invalid_algorithm")


def test_hs256_signed_with_the_rsa_public_key_is_refused(keys: Keys, tmp_path: Path) -> None:
    """The classic HS/RS confusion: the attacker uses the public PEM as an HMAC secret."""
    forged = raw_token({"alg": "HS256", "typ": "JWT"}, claims(), secret=public_pem(keys.rsa))
    rsa_only = pem_keyset(tmp_path, keys.rsa)
    refused(verifier(rsa_only, algorithms=("RS256",)), forged, "invalid_algorithm")
    mixed = KeySet.combine(KeySet.from_secret(SECRET), rsa_only)
    refused(verifier(mixed, algorithms=("HS256", "RS256")), forged, "invalid_signature")
    jwks = jwks_keyset(tmp_path, jwk(keys.rsa, kid="r"))
    forged_kid = raw_token({"alg": "HS256", "kid": "r"}, claims(), secret=public_pem(keys.rsa))
    v = verifier(KeySet.combine(jwks, KeySet.from_secret(SECRET)), algorithms=("HS256", "RS256"))
    refused(v, forged_kid, "invalid_algorithm")


def test_ec_key_of_the_wrong_curve_is_not_used(keys: Keys, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ES256"):
        verifier(pem_keyset(tmp_path, keys.ec384), algorithms=("ES256",))


# --- JWKS and kid ---------------------------------------------------------------------------

KID_TABLE = [
    # signer, kid in the token header, expected code
    ("rsa", "a", None),
    ("rsa_other", "b", None),
    ("rsa_other", "a", "invalid_signature"),
    ("rsa", "zzz", "unknown_key"),
    ("rsa", None, None),
    ("rsa_other", None, None),
]


@pytest.mark.parametrize(("signer", "kid", "code"), KID_TABLE)
def test_jwks_selects_key_by_kid(
    keys: Keys, tmp_path: Path, signer: str, kid: str | None, code: str | None
) -> None:
    jwks = jwks_keyset(tmp_path, jwk(keys.rsa, kid="a"), jwk(keys.rsa_other, kid="b"))
    v, tok = verifier(jwks, algorithms=("RS256",)), token(getattr(keys, signer), "RS256", kid=kid)
    if code is None:
        assert v.verify(tok).tenant_id == "acme"
    else:
        refused(v, tok, code)


def test_jwks_two_keys_without_kid(keys: Keys, tmp_path: Path) -> None:
    jwks = jwks_keyset(tmp_path, jwk(keys.rsa), jwk(keys.rsa_other))
    v = verifier(jwks, algorithms=("RS256",))
    assert v.verify(token(keys.rsa, "RS256")).user_id == "alice"
    assert v.verify(token(keys.rsa_other, "RS256")).user_id == "alice"
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused(v, token(stranger, "RS256"), "invalid_signature")


def test_jwks_picks_keys_by_family_and_honours_pinned_alg(keys: Keys, tmp_path: Path) -> None:
    jwks = jwks_keyset(
        tmp_path,
        jwk(keys.rsa, kid="pinned", alg="RS256"),
        jwk(keys.rsa_other, kid="free"),
        jwk(keys.ec, kid="ec"),
        jwk(keys.ed, kid="ed"),
        {"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB", "kid": "encryption-only"},
        {"kty": "future-type", "kid": "ignored"},
    )
    v = verifier(jwks, algorithms=("RS256", "PS256", "ES256", "EdDSA"))
    assert v.verify(token(keys.rsa, "RS256", kid="pinned")).user_id == "alice"
    refused(v, token(keys.rsa, "PS256", kid="pinned"), "invalid_algorithm")
    assert v.verify(token(keys.rsa_other, "PS256", kid="free")).user_id == "alice"
    refused(v, token(keys.ec, "ES256", kid="ed"), "invalid_algorithm")
    assert v.verify(token(keys.ed, "EdDSA", kid="ed")).user_id == "alice"
    assert v.verify(token(keys.ec, "ES256")).user_id == "alice"  # no kid: by family
    refused(v, token(keys.rsa, "RS256", kid="encryption-only"), "unknown_key")


def test_kid_is_ignored_by_keys_without_one(keys: Keys, tmp_path: Path) -> None:
    """Issuers add a kid even with one shared key; a key set without kids still answers."""
    assert verifier().verify(token(SECRET, kid="whatever")).user_id == "alice"
    v = verifier(pem_keyset(tmp_path, keys.ec), algorithms=("ES256",))
    assert v.verify(token(keys.ec, "ES256", kid="k")).user_id == "alice"


_RECORDING: list[list[str]] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _RECORDING and event in ("open", "os.listdir", "os.scandir"):
        _RECORDING[-1].append(str(args[0]) if args else "?")


sys.addaudithook(_audit)


def test_kid_tricks_are_only_dict_lookups(keys: Keys, tmp_path: Path) -> None:
    existing = write(tmp_path, "existing.json", {"keys": [jwk(keys.rsa)]})
    jwks = jwks_keyset(tmp_path, jwk(keys.rsa, kid="a"))
    v = verifier(jwks, algorithms=("RS256",))
    cases = [
        ("../../etc/passwd", "unknown_key"),
        ("/etc/passwd", "unknown_key"),
        (existing, "unknown_key"),
        ("file:///etc/passwd", "unknown_key"),
        ("a\x00", "unknown_key"),
        ("x" * 128, "unknown_key"),
        ("x" * 129, "malformed_token"),
        ("x" * 5000, "malformed_token"),
        ("", "malformed_token"),
        (123, "malformed_token"),
        (None, "malformed_token"),
        (["a"], "malformed_token"),
    ]
    opened: list[str] = []
    _RECORDING.append(opened)
    try:
        for kid, code in cases:
            tok = raw_token({"alg": "RS256", "kid": kid}, claims(), keys.rsa)
            refused(v, tok, code)
    finally:
        _RECORDING.pop()
    assert opened == []


def test_audit_hook_does_see_file_opens(tmp_path: Path) -> None:
    """Guards the test above: the hook is live, so an empty record means no file was opened."""
    opened: list[str] = []
    _RECORDING.append(opened)
    try:
        (tmp_path / "x").write_text("x")
    finally:
        _RECORDING.pop()
    assert opened


# --- claims ---------------------------------------------------------------------------------

CLAIM_TABLE = [
    ({"sub": DROP}, "missing_claim"),
    ({"sub": ""}, "missing_claim"),
    ({"sub": None}, "missing_claim"),
    ({"sub": 123}, "invalid_claim"),
    ({"sub": ["alice"]}, "invalid_claim"),
    ({"sub": "a" * 257}, "invalid_claim"),
    ({"sub": "al\nice"}, "invalid_claim"),
    ({"sub": "al\x7fice"}, "invalid_claim"),
    ({"tenantId": DROP}, "missing_claim"),
    ({"tenantId": ""}, "missing_claim"),
    ({"tenantId": {"id": "acme"}}, "invalid_claim"),
    ({"tenantId": False}, "invalid_claim"),
    ({"tenantId": "t" * 257}, "invalid_claim"),
    ({"sub": "a" * 256, "tenantId": "élan vital"}, None),
]


@pytest.mark.parametrize(("overrides", "code"), CLAIM_TABLE)
def test_user_and_tenant_claims(overrides: dict[str, Any], code: str | None) -> None:
    tok = token(SECRET, **overrides)
    if code is None:
        principal = verifier().verify(tok)
        assert (principal.user_id, principal.tenant_id) == (overrides["sub"], overrides["tenantId"])
    else:
        refused(verifier(), tok, code)


def test_custom_claim_names() -> None:
    v = verifier(user_claim="uid", tenant_claim="org")
    principal = v.verify(token(SECRET, sub=DROP, tenantId=DROP, uid="u-1", org="o-1"))
    assert (principal.user_id, principal.tenant_id) == ("u-1", "o-1")
    refused(v, token(SECRET), "missing_claim")
    refused(v, token(SECRET, uid="u-1", org=7), "invalid_claim")


def test_mint_token_with_a_custom_tenant_claim() -> None:
    tok = mint_token(SECRET, sub="u", tenant_id="t", tenant_claim="org", now=clock)
    assert verifier(tenant_claim="org").verify(tok).tenant_id == "t"


# --- issuer and audience --------------------------------------------------------------------

ISS_AUD = [
    # verifier options, claims, expected code
    ({"issuer": "https://idp"}, {"iss": "https://idp"}, None),
    ({"issuer": "https://idp"}, {"iss": "https://evil"}, "invalid_issuer"),
    ({"issuer": "https://idp"}, {}, "invalid_issuer"),
    ({"audience": ("chat", "ops")}, {"aud": "ops"}, None),
    ({"audience": ("chat", "ops")}, {"aud": ["billing", "chat"]}, None),
    ({"audience": ("chat",)}, {"aud": "billing"}, "invalid_audience"),
    ({"audience": ("chat",)}, {}, "invalid_audience"),
    ({"audience": ("chat",)}, {"aud": []}, "invalid_audience"),
    ({"audience": ("chat",)}, {"aud": [1, None]}, "invalid_audience"),
    ({"audience": ("chat",)}, {"aud": {"chat": 1}}, "invalid_audience"),
    ({"audience": "chat"}, {"aud": "chat"}, None),
    ({}, {"aud": "anything", "iss": "anyone"}, None),
]


@pytest.mark.parametrize(("options", "overrides", "code"), ISS_AUD)
def test_issuer_and_audience(
    options: dict[str, Any], overrides: dict[str, Any], code: str | None
) -> None:
    v, tok = verifier(**options), token(SECRET, **overrides)
    if code is None:
        assert v.verify(tok).user_id == "alice"
    else:
        refused(v, tok, code)


@pytest.mark.parametrize("iss", [42, ["https://idp"], None])
def test_non_string_iss_is_refused(iss: object) -> None:
    tok = raw_token({"alg": "HS256"}, claims(iss=iss))  # PyJWT would not encode these
    refused(verifier(issuer="https://idp"), tok, "invalid_issuer")


# --- token shape ----------------------------------------------------------------------------

SHAPES = [
    (None, "missing_token"),
    ("", "missing_token"),
    (123, "malformed_token"),
    (b"eyJ.eyJ.sig", "malformed_token"),
    ({"token": "x"}, "malformed_token"),
    (["a.b.c"], "malformed_token"),
    (1.5, "malformed_token"),
    ("x" * 8193, "token_too_large"),
    ("é" * 5000, "token_too_large"),
    ("garbage-token-value", "malformed_token"),
    ("a.b.c", "malformed_token"),
    ("....", "malformed_token"),
    ("eyJhbGciOiJIUzI1NiJ9..", "invalid_signature"),  # signature first, then payload
    ("eyJhbGciOiJIUzI1NiJ9.e30.!!!!", "malformed_token"),
    ("Bearer eyJhbGciOiJIUzI1NiJ9.e30.", "malformed_token"),
    ("eyJ.é.x", "malformed_token"),
    ("\ud800.x.y", "malformed_token"),
    (b64(b"[]") + ".e30.", "malformed_token"),
    (b64(b'{"alg": "HS256"') + ".e30.", "malformed_token"),
    (b64(b"[" * 3000) + ".e30.", "malformed_token"),
]


@pytest.mark.parametrize(("tok", "code"), SHAPES, ids=lambda value: repr(value)[:30])
def test_token_shape(tok: object, code: str) -> None:
    refused(verifier(), tok, code)


def test_size_limit_counts_the_whole_token() -> None:
    tok = token(SECRET)
    assert verifier(max_token_bytes=len(tok)).verify(tok).user_id == "alice"
    refused(verifier(max_token_bytes=len(tok) - 1), tok, "token_too_large")
    refused(verifier(), tok + "é", "malformed_token")


SIGNED_GARBAGE = [
    ({"alg": "HS256"}, b"not json"),
    ({"alg": "HS256"}, b"[1, 2]"),
    ({"alg": "HS256"}, b'"a string"'),
    ({"alg": "HS256"}, b"[" * 5000),
    ({"alg": "HS256", "b64": False, "crit": ["b64"]}, claims()),
    ({"alg": "HS256", "crit": ["exp"]}, claims()),
]


@pytest.mark.parametrize(("header", "payload"), SIGNED_GARBAGE, ids=lambda value: str(value)[:20])
def test_correctly_signed_garbage_is_malformed(header: dict[str, Any], payload: Any) -> None:
    refused(verifier(), raw_token(header, payload), "malformed_token")


# --- device ids -----------------------------------------------------------------------------

DEVICE_IDS = [
    ("phone-1", "phone-1"),
    ("A.b_c:d-9", "A.b_c:d-9"),
    ("x" * 128, "x" * 128),
    (None, "generated-1"),
    ("", None),
    ("x" * 129, None),
    ("has space", None),
    ("slash/y", None),
    ("new\nline", None),
    ("ünïcode", None),
    ("phone-1\n", None),
    (42, None),
]


@pytest.mark.parametrize(("value", "expected"), DEVICE_IDS, ids=lambda value: repr(value)[:20])
def test_device_id(value: Any, expected: str | None) -> None:
    generate: Callable[[], str] = lambda: "generated-1"  # noqa: E731
    if expected is None:
        with pytest.raises(AuthError) as info:
            validate_device_id(value, generate)
        assert info.value.code == "invalid_device_id"
        assert not (isinstance(value, str) and len(value) >= 8 and value in info.value.detail)
    else:
        assert validate_device_id(value, generate) == expected


# --- dev mode -------------------------------------------------------------------------------


def _dev_jwt(**overrides: Any) -> str:
    return token(b"an-unknown-key-nobody-configured!!", **overrides)


DEV = [
    # token, (user, tenant)
    (_dev_jwt(), ("alice", "acme")),
    (_dev_jwt(exp=NOW - 10**6), ("alice", "acme")),
    (_dev_jwt(tenantId=DROP), ("alice", "dev")),
    (_dev_jwt(sub=DROP), ("anonymous", "acme")),
    (_dev_jwt(sub=1234), ("1234", "acme")),
    (_dev_jwt(sub="bad\x00id", tenantId=["x"]), ("anonymous", "dev")),
    (jwt.encode({"sub": "bob"}, None, algorithm="none"), ("bob", "dev")),
    ("bob", ("bob", "dev")),
    ("bob@example.com", ("bob@example.com", "dev")),
    ("x" * 65, ("anonymous", "dev")),
    ("has space", ("anonymous", "dev")),
    ("a.b.c", ("a.b.c", "dev")),  # not a JWT, but a short safe string
    ("", ("anonymous", "dev")),
    (None, ("anonymous", "dev")),
    (42, ("anonymous", "dev")),
    ({"token": "bob"}, ("anonymous", "dev")),
    ("x" * 100_000, ("anonymous", "dev")),
]


@pytest.mark.parametrize(("tok", "expected"), DEV, ids=lambda value: repr(value)[:30])
def test_dev_mode_accepts_everyone(tok: object, expected: tuple[str, str]) -> None:
    principal = DevModeVerifier().verify(tok)
    assert (principal.user_id, principal.tenant_id) == expected
    assert principal.expires_at is None


def test_dev_mode_options() -> None:
    v = DevModeVerifier(user_claim="uid", tenant_claim="org", default_tenant="sandbox")
    assert v.verify(_dev_jwt(uid="u", org="o")).user_id == "u"
    assert v.verify(_dev_jwt()).tenant_id == "sandbox"
    assert isinstance(v, TokenVerifier)
    with pytest.raises(ValueError, match="default_tenant"):
        DevModeVerifier(default_tenant="")


# --- key sets and construction --------------------------------------------------------------


def test_secret_refusals(keys: Keys) -> None:
    ssh = keys.rsa.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    der = keys.rsa.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    bad: list[Any] = [public_pem(keys.rsa), b"  \n" + ssh, der, b"short", b"", "a-str" * 10]
    bad += [private_pem(keys.ec), json.dumps({"kty": "oct", "k": b64(SECRET)}).encode()]
    for secret in bad:
        with pytest.raises(ValueError) as info:
            KeySet.from_secret(secret)
        assert str(secret) not in str(info.value)


def test_pem_file_refusals(keys: Keys, tmp_path: Path) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    for name, data in [
        ("private.pem", private_pem(keys.rsa)),
        ("garbage.pem", b"-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n"),
        ("empty.pem", b""),
        ("weak.pem", public_pem(weak)),
        ("jwks.pem", json.dumps({"keys": [jwk(keys.rsa)]}).encode()),
    ]:
        with pytest.raises(ValueError, match=name):
            KeySet.from_pem_file(write(tmp_path, name, data))
    with pytest.raises(OSError):
        KeySet.from_pem_file(str(tmp_path / "missing.pem"))


def test_jwks_file_refusals(keys: Keys, tmp_path: Path) -> None:
    private_entry = {**jwk(keys.ec), "d": b64(b"x" * 32)}
    cases: list[tuple[str | dict[str, Any], str]] = [
        ("not json", "not valid JSON"),
        ("[]", "keys"),
        ({"keys": {}}, "keys"),
        ({"keys": []}, "no usable"),
        ({"keys": [{"kty": "RSA", "use": "enc", "n": "x", "e": "AQAB"}]}, "no usable"),
        ({"keys": ["x"]}, r"keys\[0\]"),
        ({"keys": [jwk(keys.rsa), private_entry]}, r"keys\[1\].*private"),
        ({"keys": [jwk(keys.rsa, kid="k" * 129)]}, "kid"),
        ({"keys": [jwk(keys.rsa, kid=7)]}, "kid"),
        ({"keys": [jwk(keys.rsa, alg="none")]}, "alg"),
        ({"keys": [{"kty": "RSA", "n": "!!", "e": "AQAB"}]}, "unusable"),
        ({"keys": [{"kty": "oct", "k": b64(b"short")}]}, "unusable"),
    ]
    for data, message in cases:
        with pytest.raises(ValueError, match=message):
            KeySet.from_jwks_file(write(tmp_path, "jwks.json", data))


def test_symmetric_jwks_key_is_a_secret(tmp_path: Path) -> None:
    jwks = jwks_keyset(tmp_path, {"kty": "oct", "k": b64(SECRET), "kid": "s"})
    assert verifier(jwks).verify(token(SECRET, kid="s")).user_id == "alice"


VERIFIER_ERRORS = [
    ({"algorithms": ()}, "algorithms"),
    ({"algorithms": ("HS999",)}, "unsupported"),
    ({"algorithms": ("ES521",)}, "unsupported"),
    ({"algorithms": ("RS256",)}, "RS256"),
    ({"algorithms": ("HS512",)}, "HS512"),  # the 37-byte secret is too short for HS512
    ({"leeway": -1}, "leeway"),
    ({"leeway": float("inf")}, "leeway"),
    ({"audience": ()}, "audience"),
    ({"audience": ("chat", "")}, "audience"),
    ({"issuer": ""}, "issuer"),
    ({"user_claim": ""}, "user_claim"),
    ({"max_token_bytes": 0}, "max_token_bytes"),
]


@pytest.mark.parametrize(("options", "message"), VERIFIER_ERRORS)
def test_verifier_configuration_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        verifier(**options)


# --- build_verifier -------------------------------------------------------------------------


def build(**overrides: Any) -> TokenVerifier:
    options: dict[str, Any] = {
        "mode": "jwt",
        "secret": None,
        "public_key_file": None,
        "jwks_file": None,
        "algorithms": ("HS256",),
        "issuer": None,
        "audience": None,
        "leeway": 0.0,
        "user_claim": "sub",
        "tenant_claim": "tenantId",
        "now": clock,
    }
    return build_verifier(**{**options, **overrides})


def test_build_verifier_modes(keys: Keys, tmp_path: Path) -> None:
    assert isinstance(build(mode="none"), DevModeVerifier)
    assert isinstance(build(secret=SECRET), TokenVerifier)
    assert build(secret=SECRET, audience=()).verify(token(SECRET)).user_id == "alice"
    pem = write(tmp_path, "k.pem", public_pem(keys.ec))
    jwks = write(tmp_path, "k.json", {"keys": [jwk(keys.rsa, kid="r")]})
    v = build(
        secret=SECRET, public_key_file=pem, jwks_file=jwks, algorithms=("HS256", "ES256", "RS256")
    )
    for tok in (token(SECRET), token(keys.ec, "ES256"), token(keys.rsa, "RS256", kid="r")):
        assert v.verify(tok).user_id == "alice"
    v = build(secret=SECRET, issuer="idp", audience=("chat",), leeway=30, tenant_claim="org")
    assert v.verify(token(SECRET, exp=NOW - 10, iss="idp", aud="chat", org="o")).tenant_id == "o"


def test_build_verifier_errors_name_the_option(keys: Keys, tmp_path: Path) -> None:
    ec_pem = write(tmp_path, "ec.pem", public_pem(keys.ec))
    cases: list[tuple[dict[str, Any], str]] = [
        ({"mode": "maybe"}, "--auth: "),
        ({}, "--jwt-algorithms: HS256 needs --jwt-secret or --jwt-secret-file"),
        ({"secret": SECRET, "algorithms": ("HS256", "none")}, "--jwt-algorithms: .*never"),
        ({"secret": SECRET, "algorithms": ()}, "--jwt-algorithms: "),
        ({"secret": SECRET, "algorithms": ("RS256",)}, "--jwt-algorithms: RS256 needs an RSA"),
        ({"public_key_file": ec_pem, "algorithms": ("ES384",)}, "--jwt-algorithms: ES384 needs"),
        ({"secret": SECRET, "algorithms": ("HS512",)}, "--jwt-algorithms: HS512 needs .*64"),
        ({"secret": b"short"}, "--jwt-secret: "),
        ({"secret": public_pem(keys.rsa)}, "--jwt-secret: .*PEM"),
        ({"public_key_file": str(tmp_path / "nope.pem")}, "--jwt-public-key: .*nope.pem"),
        ({"jwks_file": write(tmp_path, "bad.json", "{")}, "--jwt-jwks: "),
        ({"jwks_file": str(tmp_path)}, "--jwt-jwks: "),
        ({"secret": SECRET, "leeway": -5}, "--jwt-leeway: "),
        ({"secret": SECRET, "issuer": ""}, "--jwt-issuer: "),
        ({"secret": SECRET, "audience": [""] * 0 + [3]}, "--jwt-audience: "),
        ({"secret": SECRET, "user_claim": ""}, "--user-claim: "),
        ({"secret": SECRET, "tenant_claim": ""}, "--tenant-claim: "),
    ]
    for overrides, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            build(**overrides)
        for secret in (*SECRETS, public_pem(keys.rsa)):
            assert secret.decode() not in str(info.value)


# --- mint_token -----------------------------------------------------------------------------


def test_mint_token(keys: Keys, tmp_path: Path) -> None:
    tok = mint_token(
        keys.ed, algorithm="EdDSA", sub="u", tenant_id="t", now=clock, kid="e1", ttl=60
    )
    assert jwt.get_unverified_header(tok)["kid"] == "e1"
    principal = verifier(pem_keyset(tmp_path, keys.ed), algorithms=("EdDSA",)).verify(tok)
    assert (principal.user_id, principal.tenant_id, principal.expires_at) == ("u", "t", NOW + 60)
    assert principal.claims["iat"] == int(NOW)
    pem_signed = mint_token(
        private_pem(keys.ec), algorithm="ES256", sub="u", tenant_id="t", now=clock
    )
    assert verifier(pem_keyset(tmp_path, keys.ec), algorithms=("ES256",)).verify(pem_signed)
    forever = mint_token(SECRET, sub="u", tenant_id="t", ttl=None, now=clock, aud="chat", role="x")
    principal = verifier(audience=("chat",)).verify(forever)
    assert principal.expires_at is None
    assert principal.claims["role"] == "x"
    assert "exp" not in principal.claims
    for algorithm in ("none", "NONE", "HS1"):
        with pytest.raises(ValueError, match="algorithm"):
            mint_token(SECRET, algorithm=algorithm, sub="u", tenant_id="t")


# --- fuzzing --------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "alg": st.sampled_from(["HS256", "RS256", "ES256", "EdDSA", "none", "HS384"]) | JSON,
        "kid": st.sampled_from(["r", "e", "../x"]) | st.text(max_size=200) | JSON,
        "typ": JSON,
        "crit": JSON,
        "b64": JSON,
    },
)
JWTISH = st.builds(
    lambda header, payload, signature: raw_token(header, payload, None) + b64(signature),
    HEADERS,
    JSON | st.fixed_dictionaries({"sub": JSON, "tenantId": JSON, "exp": JSON, "nbf": JSON}),
    st.binary(max_size=300),
)
TOKENS = st.one_of(
    st.text(),
    st.text(alphabet="abcXYZ019-_.=", max_size=400),
    st.binary(),
    st.integers(),
    st.floats(),
    st.none(),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
    JWTISH,
)


@pytest.fixture(scope="session")
def fuzz_verifier(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> JWTVerifier:
    directory = tmp_path_factory.mktemp("fuzz")
    keyset = KeySet.combine(
        KeySet.from_secret(SECRET),
        pem_keyset(directory, keys.rsa),
        jwks_keyset(directory, jwk(keys.ec, kid="e"), jwk(keys.ed, kid="d")),
    )
    algorithms = ("HS256", "RS256", "PS256", "ES256", "EdDSA")
    return JWTVerifier(keys=keyset, algorithms=algorithms, now=clock, audience=("chat",))


@settings(max_examples=400, deadline=None)
@given(tok=TOKENS)
def test_fuzz_only_auth_errors(fuzz_verifier: JWTVerifier, tok: object) -> None:
    with pytest.raises(AuthError) as info:
        fuzz_verifier.verify(tok)
    assert_safe(info.value, tok)
    DevModeVerifier().verify(tok)


@settings(max_examples=300, deadline=None)
@given(position=st.integers(min_value=0), char=st.sampled_from("AaZz09-_.=é"))
def test_fuzz_mutated_valid_token(fuzz_verifier: JWTVerifier, position: int, char: str) -> None:
    good = token(SECRET, aud="chat")
    index = position % len(good)
    mutated = good[:index] + char + good[index + 1 :]
    try:
        principal = fuzz_verifier.verify(mutated)
    except AuthError as error:
        assert_safe(error, mutated)
    else:
        assert principal.user_id == "alice"


CLAIMS = st.fixed_dictionaries(
    {},
    optional={
        "sub": st.just("alice") | JSON,
        "tenantId": st.just("acme") | JSON,
        "exp": st.just(NOW + 60) | st.floats() | JSON,
        "nbf": st.just(NOW - 60) | st.integers() | JSON,
        "iat": st.integers() | JSON,
        "aud": st.sampled_from(["chat", ["chat"]]) | JSON,
    },
)


@settings(max_examples=400, deadline=None)
@given(payload=JSON | CLAIMS)
def test_fuzz_correctly_signed_claims(fuzz_verifier: JWTVerifier, payload: Any) -> None:
    """Past the signature, hostile claim values still yield an AuthError or a sound principal."""
    tok = raw_token({"alg": "HS256"}, payload, SECRET)
    try:
        principal = fuzz_verifier.verify(tok)
    except AuthError as error:
        assert_safe(error, tok)
    else:
        # accepted: the principal is exactly what the signed claims say
        assert (principal.user_id, principal.tenant_id) == (payload["sub"], payload["tenantId"])


@settings(max_examples=2000, deadline=None)
@given(
    segment=st.binary(max_size=40)
    | st.text(alphabet="ABCabc012_-=+/!.", max_size=40).map(str.encode)
)
def test_fast_segment_decoder_agrees_with_pyjwt(segment: bytes) -> None:
    """Our regex-based base64url check accepts and refuses exactly what PyJWT's does."""
    from jwt.api_jws import PyJWS

    from caas_socket.auth.verifiers import _JWS

    def outcome(decode: Any) -> object:
        try:
            return decode(segment, "header")
        except jwt.DecodeError:
            return "refused"

    assert outcome(_JWS._decode_base64url_segment) == outcome(PyJWS._decode_base64url_segment)
