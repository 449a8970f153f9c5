"""The internal HTTP API as a twisted.web site: routing, auth, bodies, answers, one log line.

Other services reach users through any node (``--api-listen``): a command is
published to every node, a query reads the shared registry.  Every request is
logged once, at info, with its method, route *template* (ids stay out of the
logs), status, tenant and duration (``event="api_request"``); never its body
or key.

Bodies are bounded before they are buffered: twisted.web would keep a whole
body in memory (or a temporary file), so :class:`BoundedRequest` keeps at most
``max_body`` bytes and answers 413 as soon as ``Content-Length`` announces
more, or as soon as a chunked body grows past it.
"""

from __future__ import annotations

import json
from importlib import resources
from io import BytesIO
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from ..app.commands import CommandError
from ..app.operations import Operations
from ..registry.interfaces import RegistryUnavailable
from ..web import QuietSite
from .errors import ApiError, from_command_error
from .handlers import ApiHandlers
from .keys import ApiKeys
from .routes import locate, resolve

__all__ = ["ApiResource", "ApiSite", "BoundedRequest", "build_api_site", "load_openapi"]

#: An idle keep-alive connection is closed after this long.
IDLE_TIMEOUT = 60.0
#: After a 413, keep reading (and dropping) the body this long before closing, so
#: that the client reads the answer instead of a connection reset.
LINGER = 2.0


def load_openapi() -> bytes:
    """The OpenAPI description shipped with the package (``caas_socket/api/openapi.json``)."""
    return resources.files("caas_socket.api").joinpath("openapi.json").read_bytes()


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def read_json(request: Request, max_body: int) -> Any:
    """The JSON body of ``request``.

    :raises ApiError: 415 unless ``Content-Type`` is ``application/json``, 413
        past ``max_body``, 400 ``invalid_json`` for anything but UTF-8 JSON
        (``NaN`` and lone surrogates included: clients could not decode them).
    """
    ctype = request.getHeader(b"content-type") or b""
    if ctype.split(b";", 1)[0].strip().lower() != b"application/json":
        raise ApiError(415, "unsupported_media_type", "send Content-Type: application/json")
    raw = request.content.read(max_body + 1)
    if len(raw) > max_body:
        raise ApiError(413, "body_too_large", f"the body exceeds {max_body} bytes")
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError):  # UnicodeError is a ValueError
        raise ApiError(400, "invalid_json", "the body is not valid UTF-8 JSON") from None
    return value


class ApiResource(Resource):
    """Every path of the API; a leaf, so routing is ours (:func:`~.routes.resolve`)."""

    isLeaf = True
    log = Logger()

    def __init__(
        self, handlers: ApiHandlers, keys: ApiKeys, *, clock: IReactorTime, max_body: int
    ) -> None:
        super().__init__()
        self._handlers = handlers
        self._keys = keys
        self._clock = clock
        self.max_body = max_body

    def render(self, request: Request) -> int:
        started = self._clock.seconds()
        gone: list[Failure] = []
        request.notifyFinish().addErrback(gone.append)
        Deferred.fromCoroutine(self._serve(request, started, gone)).addErrback(
            lambda f: self.log.failure("api request handling failed", f)
        )
        return NOT_DONE_YET

    async def _serve(self, request: Request, started: float, gone: list[Failure]) -> None:
        seen = locate(request.path)  # for the log, even when the method is wrong
        template = seen.route.template if seen is not None else None
        tenant = seen.tenant if seen is not None else None
        principal: str | None = None
        headers: dict[str, str] = {}
        try:
            match = resolve(request.method, request.path)
            tenant = match.tenant
            if match.route.auth:
                checked = self._keys.check(request.getHeader(b"authorization"), tenant)
                if isinstance(checked, ApiError):
                    raise checked
                principal = checked.name
            body = read_json(request, self.max_body) if match.route.body else None
            status, payload = await self._handlers.dispatch(match, body)
        except CommandError as e:
            error = from_command_error(e)
            status, payload, headers = error.status, error.to_json(), error.headers
        except ApiError as e:
            status, payload, headers = e.status, e.to_json(), e.headers
        except RegistryUnavailable:
            error = ApiError(503, "unavailable", "the registry (Redis) is unavailable; retry")
            status, payload, headers = 503, error.to_json(), {"Retry-After": "1"}
        except Exception:
            self.log.failure("api {route} failed", route=template)
            status, payload = 500, ApiError(500, "internal_error", "see the server log").to_json()
        if not gone:
            _respond(request, status, payload, headers)
        self.log_request(request.method, template, status, tenant, started, principal)

    def log_request(
        self,
        method: bytes,
        template: str | None,
        status: int,
        tenant: str | None,
        started: float,
        principal: str | None = None,
    ) -> None:
        """The one log line of a request (also for bodies refused before routing)."""
        self.log.info(
            "api {method} {route} {status} (tenant {tenant}, {duration_ms} ms)",
            method=method[:16].decode("latin-1"),
            route=template or "-",
            status=status,
            tenant=tenant,
            duration_ms=round((self._clock.seconds() - started) * 1000, 1),
            principal=principal,
            event="api_request",
        )


def _respond(request: Request, status: int, payload: Any, headers: dict[str, str]) -> None:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    for name, value in headers.items():
        request.setHeader(name.encode(), value.encode())
    request.setHeader(b"content-length", str(len(data)).encode())
    request.write(data)
    request.finish()


class BoundedRequest(Request):
    """A request that holds at most ``site.max_body`` bytes of body.

    A larger body is answered 413 at once (from the headers when
    ``Content-Length`` says so, else when the chunks pass the limit), then
    dropped as it arrives, and the connection closed: never buffered.
    """

    _refused = False
    _linger: IDelayedCall | None = None

    def gotLength(self, length: int | None) -> None:
        self.content = BytesIO()
        if length is not None and length > self.channel.site.max_body:
            self._refuse()

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        if self.content.tell() + len(data) > self.channel.site.max_body:
            self._refuse()
            return
        self.content.write(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused:  # answered already; the body is over, so is the connection
            self.channel.transport.loseConnection()
            return
        super().requestReceived(command, path, version)

    def connectionLost(self, reason: Failure) -> None:
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        super().connectionLost(reason)

    def _refuse(self) -> None:
        self._refused = True
        self.content = BytesIO()
        site: ApiSite = self.channel.site
        started = site.reactor.seconds()
        # Our answer comes before the body: no "100 Continue" may follow it.
        self.requestHeaders.removeHeader(b"expect")
        body = ApiError(413, "body_too_large", f"the body exceeds {site.max_body} bytes").body()
        transport = self.channel.transport
        transport.write(
            b"HTTP/1.1 413 Content Too Large\r\ncontent-type: application/json\r\n"
            b"cache-control: no-store\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
            % (len(body), body)
        )
        self.channel.persistent = False
        self._linger = site.reactor.callLater(LINGER, transport.loseConnection)
        # The request line is the channel's until the body is complete.
        method = getattr(self.channel, "_command", b"-")
        path = getattr(self.channel, "_path", b"").split(b"?", 1)[0]
        seen = locate(path)
        template = seen.route.template if seen is not None else None
        site.api.log_request(method, template, 413, seen and seen.tenant, started)


class ApiSite(QuietSite):
    """No access log (each request logs itself once) and no per-second timer."""

    requestFactory = BoundedRequest
    displayTracebacks = False

    def __init__(self, api: ApiResource, *, reactor: IReactorTime) -> None:
        super().__init__(api, timeout=IDLE_TIMEOUT, reactor=reactor, parsePOSTFormSubmission=False)
        self.api = api
        self.max_body = api.max_body


def build_api_site(
    operations: Operations,
    keys: ApiKeys,
    *,
    reactor: IReactorTime,
    max_body: int = 64 * 1024,
    openapi: bytes,
) -> Site:
    """The HTTP factory of the internal API, for a :class:`~caas_socket.listeners.Listener`.

    :param operations: the node's :class:`Operations`: commands reach every node.
    :param keys: who may call, for which tenants (``--api-key-file``).
    :param reactor: for timeouts and durations; passed so that nothing here
        imports the global reactor (``Site`` would, given none).
    :param max_body: the largest body accepted, in bytes; more is 413.
    :param openapi: served as is at ``/openapi.json`` (:func:`load_openapi`).
    """
    handlers = ApiHandlers(operations, openapi)
    return ApiSite(ApiResource(handlers, keys, clock=reactor, max_body=max_body), reactor=reactor)
