"""Socket.IO CONNECT authentication: a token in, a :class:`Principal` or an :class:`AuthError` out.

Pure (no reactor, no I/O once keys are loaded), so it can be fuzzed and driven by an injected
clock. PyJWT only checks signatures; algorithm families, time and claim shapes are checked here so
that each failure maps to one stable ``code`` clients can act on.
"""

from caas_socket.auth.build import build_verifier, mint_token
from caas_socket.auth.keys import SUPPORTED_ALGORITHMS, KeySet
from caas_socket.auth.principal import (
    CLIENT_MESSAGE,
    FAILURE_CODES,
    AuthError,
    Principal,
    TokenVerifier,
    validate_device_id,
)
from caas_socket.auth.verifiers import DevModeVerifier, JWTVerifier

__all__ = [
    "CLIENT_MESSAGE",
    "FAILURE_CODES",
    "SUPPORTED_ALGORITHMS",
    "AuthError",
    "DevModeVerifier",
    "JWTVerifier",
    "KeySet",
    "Principal",
    "TokenVerifier",
    "build_verifier",
    "mint_token",
    "validate_device_id",
]
