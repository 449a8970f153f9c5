"""The route table of the HTTP API and the matching of raw request paths.

Paths are matched segment by segment *before* percent-decoding, so an id may
hold any character, ``/`` included (``%2F``), and still be one segment.  Each
route names its template (``/v1/tenants/{tenant}/users/{user}/emit``): that is
what logs and metrics show, never the ids themselves.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

import attrs

from .errors import ApiError

__all__ = ["ROUTES", "Match", "Route", "locate", "resolve"]


@attrs.frozen
class Route:
    """One operation: method, path template and the name of its handler.

    :param auth: whether a key is needed (every route but the description and health).
    :param body: whether it takes a JSON body.
    """

    method: bytes
    template: str
    handler: str
    auth: bool = True
    body: bool = False

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.template.lstrip("/").split("/"))


_TENANT = "/v1/tenants/{tenant}"
_USER = _TENANT + "/users/{user}"

ROUTES: tuple[Route, ...] = (
    Route(b"POST", _USER + "/emit", "emit_user", body=True),
    Route(b"POST", _USER + "/devices/{device}/emit", "emit_device", body=True),
    Route(b"POST", _TENANT + "/rooms/{room}/emit", "emit_room", body=True),
    Route(b"POST", _USER + "/rooms", "change_rooms", body=True),
    Route(b"GET", _USER + "/rooms", "list_rooms"),
    Route(b"POST", _USER + "/disconnect", "disconnect", body=True),
    Route(b"GET", _USER + "/connections", "connections"),
    Route(b"POST", _TENANT + "/presence", "presence", body=True),
    Route(b"GET", "/openapi.json", "openapi", auth=False),
    Route(b"GET", "/v1/health", "health", auth=False),
)


@attrs.frozen
class Match:
    """A route and its decoded path parameters."""

    route: Route
    params: dict[str, str]

    @property
    def tenant(self) -> str | None:
        return self.params.get("tenant")


def _fits(route: Route, segments: list[bytes]) -> bool:
    if len(route.segments) != len(segments):
        return False
    for pattern, raw in zip(route.segments, segments, strict=True):
        if pattern.startswith("{"):
            if not raw:
                return False
        elif raw != pattern.encode():
            return False
    return True


def _decode(route: Route, segments: list[bytes]) -> dict[str, str]:
    params = {}
    for pattern, raw in zip(route.segments, segments, strict=True):
        if pattern.startswith("{"):
            try:
                params[pattern[1:-1]] = unquote_to_bytes(raw).decode("utf-8")
            except UnicodeDecodeError:
                raise ApiError(
                    400, "invalid_path", "path segments are percent-encoded UTF-8"
                ) from None
    return params


def resolve(method: bytes, path: bytes, routes: tuple[Route, ...] = ROUTES) -> Match:
    """The route of ``method path`` (``path`` without its query string).

    :raises ApiError: 404 ``not_found`` for no route, 405 ``method_not_allowed``
        with ``Allow`` when the path exists for other methods, 400
        ``invalid_path`` when an id is not percent-encoded UTF-8.
    """
    segments = path.split(b"/")
    if not path.startswith(b"/"):
        raise ApiError(404, "not_found", "no such route")
    fitting = [route for route in routes if _fits(route, segments[1:])]
    if not fitting:
        raise ApiError(404, "not_found", "no such route")
    for route in fitting:
        if route.method == method:
            return Match(route, _decode(route, segments[1:]))
    allowed = ", ".join(sorted({route.method.decode() for route in fitting}))
    raise ApiError(405, "method_not_allowed", f"this route accepts {allowed}", {"Allow": allowed})


def locate(path: bytes, routes: tuple[Route, ...] = ROUTES) -> Match | None:
    """The route a path falls under whatever the method, for logs; ``None`` if none."""
    segments = path.split(b"/")
    for route in routes:
        if path.startswith(b"/") and _fits(route, segments[1:]):
            try:
                return Match(route, _decode(route, segments[1:]))
            except ApiError:
                return Match(route, {})
    return None
