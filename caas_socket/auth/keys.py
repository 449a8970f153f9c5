"""Verification keys, read once at startup, and the rule tying each key type to its algorithms.

That rule (:meth:`Key.fits`) is what defeats algorithm confusion: an HS256 token can only ever be
checked against a shared secret, never against the bytes of an RSA public key.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import jwt
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.algorithms import ECAlgorithm, HMACAlgorithm, OKPAlgorithm, RSAAlgorithm
from jwt.utils import is_pem_format, is_ssh_key

from caas_socket.auth.principal import show

HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}  # RFC 7518 §3.2: key >= hash size
RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_CURVES: Mapping[str, type[ec.EllipticCurve]] = {
    "ES256": ec.SECP256R1,
    "ES256K": ec.SECP256K1,
    "ES384": ec.SECP384R1,
    "ES512": ec.SECP521R1,
}
SUPPORTED_ALGORITHMS = frozenset({*HMAC_MIN_BYTES, *RSA_ALGORITHMS, *EC_CURVES, "EdDSA"})
MAX_KID = 128
MIN_RSA_BITS = 2048
_MAX_KEY_FILE = 1 << 20

PublicKey = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)


@attrs.frozen
class Key:
    """One verification key; ``alg`` is set when a JWKS entry pins the key to one algorithm."""

    material: bytes | PublicKey = attrs.field(repr=False)
    kid: str | None = None
    alg: str | None = None

    def fits(self, alg: str) -> bool:
        """Whether this key may verify ``alg``: the key type must match the algorithm family."""
        m = self.material
        if self.alg is not None and self.alg != alg:
            return False
        if alg in HMAC_MIN_BYTES:
            return isinstance(m, bytes) and len(m) >= HMAC_MIN_BYTES[alg]
        if alg in RSA_ALGORITHMS:
            return isinstance(m, rsa.RSAPublicKey)
        if alg in EC_CURVES:
            return isinstance(m, ec.EllipticCurvePublicKey) and isinstance(m.curve, EC_CURVES[alg])
        return alg == "EdDSA" and isinstance(m, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)


def _checked_secret(secret: object) -> bytes:
    """Refuse weak secrets and public keys posing as secrets; messages never echo the secret."""
    if not isinstance(secret, bytes):
        raise ValueError("secret must be bytes")
    if len(secret) < HMAC_MIN_BYTES["HS256"]:
        raise ValueError(f"secret must be at least {HMAC_MIN_BYTES['HS256']} bytes")
    if b"-----BEGIN" in secret or is_pem_format(secret) or is_ssh_key(secret.lstrip()):
        raise ValueError("secret looks like a PEM/SSH key; configure it as a public key instead")
    try:
        HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(secret)  # PyJWT's own refusals (DER, JWK)
    except jwt.InvalidKeyError:
        raise ValueError("secret looks like an asymmetric key, a certificate or a JWK") from None
    return secret


def _checked_public(key: object) -> PublicKey:
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise ValueError(f"RSA key has {key.key_size} bits, need at least {MIN_RSA_BITS}")
    if isinstance(key, ec.EllipticCurvePublicKey) and not any(
        isinstance(key.curve, curve) for curve in EC_CURVES.values()
    ):
        raise ValueError(f"unsupported EC curve {key.curve.name}")
    if not isinstance(key, PublicKey):
        raise ValueError(f"expected an RSA, EC or EdDSA public key, got {type(key).__name__}")
    return key


def _read_key_file(path: str) -> bytes:
    with open(path, "rb") as file:
        data = file.read(_MAX_KEY_FILE + 1)
    if len(data) > _MAX_KEY_FILE:
        raise ValueError(f"{path}: larger than {_MAX_KEY_FILE} bytes")
    return data


_JWK_PARSERS: Mapping[str, Callable[[Any], Any]] = {
    "oct": HMACAlgorithm.from_jwk,
    "RSA": RSAAlgorithm.from_jwk,
    "EC": ECAlgorithm.from_jwk,
    "OKP": OKPAlgorithm.from_jwk,
}


def _key_from_jwk(entry: object, where: str) -> Key | None:
    """One JWKS entry; ``None`` for keys not meant for us (encryption, unknown types or algs)."""
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: not a JSON object")
    kid, alg, kty = entry.get("kid"), entry.get("alg"), entry.get("kty")
    if entry.get("use", "sig") != "sig" or not isinstance(kty, str) or kty not in _JWK_PARSERS:
        return None
    if kty == "OKP" and entry.get("crv") not in ("Ed25519", "Ed448"):
        return None  # X25519/X448 are key-agreement keys
    if kid is not None and not (isinstance(kid, str) and 0 < len(kid) <= MAX_KID):
        raise ValueError(f"{where}: kid must be a string of 1..{MAX_KID} characters")
    if alg is not None and (not isinstance(alg, str) or alg.lower() == "none"):
        raise ValueError(f"{where}: invalid alg {show(alg)}")
    if alg is not None and alg not in SUPPORTED_ALGORITHMS:
        return None
    if kty != "oct" and any(part in entry for part in ("d", "p", "q")):
        raise ValueError(f"{where}: holds a private key; a verifier needs only public keys")
    try:
        material = _JWK_PARSERS[kty](entry)
        checked = _checked_secret(material) if kty == "oct" else _checked_public(material)
    except (jwt.PyJWTError, ValueError, TypeError, KeyError) as error:
        raise ValueError(f"{where}: unusable {kty} key ({error})") from None
    return Key(checked, kid, alg)


@attrs.frozen
class KeySet:
    """An immutable set of verification keys, so verifying a token never does I/O."""

    _keys: tuple[Key, ...] = ()

    @property
    def keys(self) -> tuple[Key, ...]:
        """The keys, in the order they were given (tokens without ``kid`` try them in order)."""
        return self._keys

    @classmethod
    def from_secret(cls, secret: bytes) -> KeySet:
        """A shared HMAC secret of at least 32 bytes that does not look like a public key.

        :raises ValueError: otherwise; the message never contains the secret.
        """
        return cls((Key(_checked_secret(secret)),))

    @classmethod
    def from_pem_file(cls, path: str) -> KeySet:
        """A PEM public key or certificate; private keys are refused, a verifier needs none.

        :raises OSError: when the file cannot be read.
        :raises ValueError: when it holds no usable public key.
        """
        data = _read_key_file(path)
        try:
            if b"-----BEGIN CERTIFICATE" in data:
                key: object = x509.load_pem_x509_certificate(data).public_key()
            else:
                key = serialization.load_pem_public_key(data)
            return cls((Key(_checked_public(key)),))
        except (ValueError, TypeError, UnsupportedAlgorithm) as error:
            raise ValueError(
                f"{path}: not a usable PEM public key or certificate ({error})"
            ) from None

    @classmethod
    def from_jwks_file(cls, path: str) -> KeySet:
        """A JWKS document; encryption keys and unknown key types are skipped, not fatal.

        :raises OSError: when the file cannot be read.
        :raises ValueError: for invalid JSON, malformed entries, or no usable signing key.
        """
        try:
            document = json.loads(_read_key_file(path))
        except (ValueError, RecursionError) as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from None
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError(f'{path}: expected a JSON object {{"keys": [...]}}')
        entries = enumerate(document["keys"])
        keys = [_key_from_jwk(entry, f"{path}: keys[{i}]") for i, entry in entries]
        usable = tuple(key for key in keys if key is not None)
        if not usable:
            raise ValueError(f"{path}: no usable signing key")
        return cls(usable)

    @classmethod
    def combine(cls, *sets: KeySet) -> KeySet:
        """Several sources at once, e.g. a secret and a JWKS while clients migrate between them."""
        return cls(tuple(key for keyset in sets for key in keyset.keys))
