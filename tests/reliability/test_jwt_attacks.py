"""The JWT attack matrix against a live node that expects RS256 from one issuer for one audience.

Every forged, tampered or out-of-date token is refused at CONNECT with
``Authentication failed`` and its ``data.code``, through the official
socket.io-client; a client connected before keeps its heartbeats, and the
node logs no error.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest_twisted
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.reliability.figures import figure
from tests.reliability.harness import NodeGroup
from tests.reliability.measure import healthz
from tests.support.sio_driver import SioDriver

ISSUER, AUDIENCE = "https://auth.example", "caas"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict[str, Any], claims: dict[str, Any], signature: str = "") -> str:
    encode = lambda v: _b64(json.dumps(v).encode())  # noqa: E731
    return f"{encode(header)}.{encode(claims)}.{signature}"


def _matrix(private: Any, attacker: Any, public_pem: bytes) -> dict[str, tuple[str, str]]:
    """name -> (token, the code it must be refused with)."""
    now = int(time.time())
    good = {
        "sub": "mallory",
        "tenantId": "t1",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 600,
    }

    def rs256(claims: dict[str, Any] | None = None, key: Any = private, **headers: Any) -> str:
        return jwt.encode(claims or good, key, algorithm="RS256", headers=headers or None)

    hmac_with_public_key = ".".join(
        [
            _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()),
            _b64(json.dumps(good).encode()),
        ]
    )
    signature = hmac.new(public_pem, hmac_with_public_key.encode(), hashlib.sha256).digest()
    return {
        "alg none": (_unsigned({"alg": "none", "typ": "JWT"}, good), "invalid_algorithm"),
        "alg None": (_unsigned({"alg": "None"}, good, "AAAA"), "invalid_algorithm"),
        "alg missing": (_unsigned({"typ": "JWT"}, good, "AAAA"), "invalid_algorithm"),
        "HS256 keyed with the RSA public key": (
            f"{hmac_with_public_key}.{_b64(signature)}",
            "invalid_algorithm",
        ),
        "RS256 by another key": (rs256(key=attacker), "invalid_signature"),
        "signature stripped": (rs256().rsplit(".", 1)[0] + ".", "invalid_signature"),
        "signature not base64url": (rs256().rsplit(".", 1)[0] + ".x", "malformed_token"),
        "payload swapped": (
            ".".join(
                [
                    rs256().split(".")[0],
                    _b64(json.dumps({**good, "sub": "admin"}).encode()),
                    rs256().split(".")[2],
                ]
            ),
            "invalid_signature",
        ),
        "kid path traversal": (
            rs256(key=attacker, kid="../../../../etc/passwd"),
            "invalid_signature",
        ),
        "kid url": (rs256(key=attacker, kid="https://evil.example/jwks.json"), "invalid_signature"),
        "kid sql": (rs256(key=attacker, kid="' OR 1=1 --"), "invalid_signature"),
        "kid very long": (rs256(kid="k" * 4000), "malformed_token"),
        "kid number": (_unsigned({"alg": "RS256", "kid": 7}, good, "x"), "malformed_token"),
        "kid object": (
            _unsigned({"alg": "RS256", "kid": {"$ne": ""}}, good, "x"),
            "malformed_token",
        ),
        "kid null": (_unsigned({"alg": "RS256", "kid": None}, good, "x"), "malformed_token"),
        "oversized": (rs256({**good, "pad": "x" * 9000}), "token_too_large"),
        "not a JWT": ("hello", "malformed_token"),
        "header not JSON": (_b64(b"{nope") + "." + _b64(b"{}") + ".x", "malformed_token"),
        "non-string token": ("", "missing_token"),
        "expired": (rs256({**good, "exp": now - 3600}), "expired"),
        "not yet valid": (rs256({**good, "nbf": now + 3600}), "not_yet_valid"),
        "exp as string": (rs256({**good, "exp": str(now + 600)}), "invalid_claim"),
        "wrong issuer": (rs256({**good, "iss": "https://evil.example"}), "invalid_issuer"),
        "no issuer": (rs256({k: v for k, v in good.items() if k != "iss"}), "invalid_issuer"),
        "wrong audience": (rs256({**good, "aud": "other"}), "invalid_audience"),
        "audience list without ours": (rs256({**good, "aud": ["a", "b"]}), "invalid_audience"),
        "no subject": (rs256({k: v for k, v in good.items() if k != "sub"}), "missing_claim"),
        "subject object": (rs256({**good, "sub": {"id": 1}}), "invalid_claim"),
        "tenant with control chars": (rs256({**good, "tenantId": "t1\n"}), "invalid_claim"),
    }


@pytest_twisted.ensureDeferred
async def test_forged_and_stale_tokens_are_refused(
    nodes: NodeGroup, sio: SioDriver, tmp_path: Path
) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "public.pem").write_bytes(public_pem)
    node = nodes.start(
        "--jwt-public-key",
        str(tmp_path / "public.pem"),
        "--jwt-algorithms",
        "RS256",
        "--jwt-issuer",
        ISSUER,
        "--jwt-audience",
        AUDIENCE,
        "--jwt-leeway",
        "0",
    )
    now = int(time.time())
    valid = jwt.encode(
        {"sub": "alice", "tenantId": "t1", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 600},
        private,
        algorithm="RS256",
        headers={"kid": "../../etc/passwd"},  # a kid is never a path: keys without kid answer any
    )
    await sio.connected("good", node.url, auth={"token": valid}, query={"deviceId": "d"})
    since = node.mark()
    matrix = _matrix(private, attacker, public_pem)
    for i, (token, _) in enumerate(matrix.values()):
        sio.connect(
            f"a{i}", node.url, auth={"token": token}, query={"deviceId": "d"}, reconnection=False
        )
    outcomes: dict[str, Any] = {}
    for i, name in enumerate(matrix):
        event = await sio.wait_for(f"a{i}", ("connect", "connect_error"), 5.0)
        got = (
            (event.get("message"), (event.get("data") or {}).get("code"))
            if event["type"] == "connect_error"
            else ("CONNECTED", None)
        )
        outcomes[name] = got
    sio.emit("good", "heartbeat")
    await sio.wait_for("good", "heartbeat", 2.0)
    wrong = {n: o for n, o in outcomes.items() if o != ("Authentication failed", matrix[n][1])}
    figure("jwt-attacks", "refused_as_expected", len(matrix) - len(wrong), "tokens", of=len(matrix))
    assert not wrong, wrong
    assert not sio.seen("good", "disconnect")
    loud = [
        line
        for line in node.lines[since:]
        if '"level": "error"' in line or '"level": "critical"' in line
    ]
    assert not loud, loud[:2]
    assert len(node.events(since, event="auth_failed")) == len(matrix)
    assert healthz(node.health_url) == 200
