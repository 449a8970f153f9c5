"""The OpenAPI description says what the code does: same routes, limits, auth and errors."""

from __future__ import annotations

import json
import re
from typing import Any

from caas_socket.api import ROUTES, load_openapi
from caas_socket.api.handlers import MAX_ID
from caas_socket.app.commands import _RESERVED, MAX_ROOMS
from caas_socket.app.presence import MAX_QUERY

SPEC: dict[str, Any] = json.loads(load_openapi())
SCHEMAS = SPEC["components"]["schemas"]


def _operations() -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): operation
        for path, item in SPEC["paths"].items()
        for method, operation in item.items()
    }


def test_every_route_is_described_and_nothing_else() -> None:
    assert set(_operations()) == {(r.method.decode(), r.template) for r in ROUTES}


def test_security_matches_the_routes() -> None:
    assert SPEC["security"] == [{"bearerAuth": []}]
    scheme = SPEC["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    operations = _operations()
    for route in ROUTES:
        operation = operations[(route.method.decode(), route.template)]
        if route.auth:
            assert "security" not in operation
            assert {"401", "403"} <= set(operation["responses"]), route.template
        else:
            assert operation["security"] == []


def test_bodies_and_errors_match_the_routes() -> None:
    operations = _operations()
    for route in ROUTES:
        operation = operations[(route.method.decode(), route.template)]
        assert ("requestBody" in operation) == route.body, route.template
        if route.body:
            assert operation["requestBody"]["required"] is True
            assert {"400", "413", "415", "422"} <= set(operation["responses"])
        params = {p["name"] for p in operation.get("parameters", [])}
        assert params == set(re.findall(r"\{(\w+)\}", route.template))
        if route.auth:
            assert "503" in operation["responses"]


def test_limits_are_the_code_limits() -> None:
    assert SCHEMAS["Id"] == {"type": "string", "minLength": 1, "maxLength": MAX_ID}
    assert SCHEMAS["RoomList"]["maxItems"] == MAX_ROOMS
    assert SCHEMAS["PresenceRequest"]["properties"]["userIds"]["maxItems"] == MAX_QUERY
    assert set(SCHEMAS["Event"]["not"]["enum"]) == _RESERVED
    assert SCHEMAS["DisconnectRequest"]["properties"]["mode"]["enum"] == ["reconnect", "stay-out"]
    for name in ("EmitRequest", "RoomsChange", "DisconnectRequest", "PresenceRequest"):
        assert SCHEMAS[name]["additionalProperties"] is False  # unknown fields are refused


def test_every_reference_resolves() -> None:
    text = load_openapi().decode()
    for kind, name in re.findall(r'"\$ref": "#/components/(\w+)/(\w+)"', text):
        assert name in SPEC["components"][kind], name
