"""Routing of raw paths: templates, percent-decoding, 404 and 405."""

from __future__ import annotations

import pytest

from caas_socket.api import ROUTES, ApiError
from caas_socket.api.routes import locate, resolve


def test_ids_are_percent_decoded_after_splitting() -> None:
    match = resolve(b"POST", b"/v1/tenants/a%3Ab/users/al%2Fice%20%E2%9C%93/emit")
    assert match.route.template == "/v1/tenants/{tenant}/users/{user}/emit"
    assert match.params == {"tenant": "a:b", "user": "al/ice \u2713"}
    assert match.tenant == "a:b"


@pytest.mark.parametrize(
    ("method", "path", "handler"),
    [
        (b"POST", b"/v1/tenants/t/users/u/emit", "emit_user"),
        (b"POST", b"/v1/tenants/t/users/u/devices/d/emit", "emit_device"),
        (b"POST", b"/v1/tenants/t/rooms/r/emit", "emit_room"),
        (b"POST", b"/v1/tenants/t/users/u/rooms", "change_rooms"),
        (b"GET", b"/v1/tenants/t/users/u/rooms", "list_rooms"),
        (b"POST", b"/v1/tenants/t/users/u/disconnect", "disconnect"),
        (b"GET", b"/v1/tenants/t/users/u/connections", "connections"),
        (b"POST", b"/v1/tenants/t/presence", "presence"),
        (b"GET", b"/openapi.json", "openapi"),
        (b"GET", b"/v1/health", "health"),
        # ids that look like the literal segments of other routes
        (b"POST", b"/v1/tenants/rooms/users/emit/emit", "emit_user"),
        (b"GET", b"/v1/tenants/users/users/rooms/rooms", "list_rooms"),
    ],
)
def test_every_route(method: bytes, path: bytes, handler: str) -> None:
    assert resolve(method, path).route.handler == handler


def test_only_the_description_and_health_go_without_a_key() -> None:
    assert {r.template for r in ROUTES if not r.auth} == {"/openapi.json", "/v1/health"}


@pytest.mark.parametrize(
    "path",
    [
        b"",
        b"/",
        b"v1/health",
        b"/v1/health/",
        b"/v1/tenants//users/u/emit",  # an empty id
        b"/v1/tenants/t/users/u/emit/",
        b"/v1/tenants/t/users/u/u2/emit",
        b"/V1/tenants/t/users/u/emit",
        b"/v1/tenants/t/users/u/%65mit",  # literal segments are not decoded
    ],
)
def test_unknown_paths_are_not_found(path: bytes) -> None:
    with pytest.raises(ApiError) as raised:
        resolve(b"GET", path)
    assert (raised.value.status, raised.value.code) == (404, "not_found")


def test_a_wrong_method_names_the_allowed_ones() -> None:
    with pytest.raises(ApiError) as raised:
        resolve(b"DELETE", b"/v1/tenants/t/users/u/rooms")
    assert (raised.value.status, raised.value.code) == (405, "method_not_allowed")
    assert raised.value.headers == {"Allow": "GET, POST"}
    with pytest.raises(ApiError) as raised:
        resolve(b"get", b"/v1/tenants/t/users/u/emit")  # methods are case-sensitive
    assert raised.value.headers == {"Allow": "POST"}


def test_ids_must_be_utf8() -> None:
    with pytest.raises(ApiError) as raised:
        resolve(b"POST", b"/v1/tenants/%FF/users/u/emit")
    assert (raised.value.status, raised.value.code) == (400, "invalid_path")


def test_locate_ignores_the_method_for_logs() -> None:
    seen = locate(b"/v1/tenants/acme/users/u/rooms")
    assert seen is not None and seen.route.template.endswith("/rooms") and seen.tenant == "acme"
    undecodable = locate(b"/v1/tenants/%FF/users/u/rooms")
    assert undecodable is not None and undecodable.tenant is None
    assert locate(b"/elsewhere") is None
