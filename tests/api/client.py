"""A bounded HTTP client of the API (twisted.web's Agent), and the keys of the tests."""

from __future__ import annotations

import json
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import deferLater
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from tests.support.http import BodyCollector

TIMEOUT = 5.0
FULL_KEY = "full-access-key-0123456789abcdef"
T1_KEY = "tenant-t1-only-key-0123456789abc"
KEYS_TEXT = f"# keys of the API tests\n{FULL_KEY}\n{T1_KEY}   t1   # one tenant\n"
LOCAL = "tcp:0:interface=127.0.0.1"
_DEFAULT = object()


@attrs.frozen
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def code(self) -> str:
        """The error code of an error reply."""
        return str(self.json["error"]["code"])


@implementer(IBodyProducer)
class _Bytes:
    """A request body written at once; ``length=None`` sends it chunked."""

    def __init__(self, data: bytes, chunked: bool = False) -> None:
        self._data = data
        self.length = UNKNOWN_LENGTH if chunked else len(data)

    def startProducing(self, consumer: Any) -> Deferred[None]:
        consumer.write(self._data)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class ApiClient:
    """Calls the API at ``base`` with a key (``key=None``: no Authorization header)."""

    def __init__(self, base: str, key: str | None = FULL_KEY) -> None:
        self.base = base
        self.key = key
        self._pool = HTTPConnectionPool(reactor, persistent=False)
        self._agent = Agent(reactor, pool=self._pool)

    async def request(
        self,
        method: str,
        path: str,
        body: Any = _DEFAULT,
        *,
        key: Any = _DEFAULT,
        raw: bytes | None = None,
        content_type: str | None = "application/json",
        chunked: bool = False,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """``body`` is sent as JSON; ``raw`` as is.  Bounded by :data:`TIMEOUT`."""
        sent = Headers()
        key = self.key if key is _DEFAULT else key
        if key is not None:
            sent.addRawHeader(b"authorization", f"Bearer {key}".encode())
        data = raw if raw is not None else None if body is _DEFAULT else json.dumps(body).encode()
        if data is not None and content_type is not None:
            sent.addRawHeader(b"content-type", content_type.encode())
        for name, value in (headers or {}).items():
            sent.addRawHeader(name.encode(), value.encode())
        producer = None if data is None else _Bytes(data, chunked)
        d = self._agent.request(method.encode(), (self.base + path).encode(), sent, producer)
        response = await d.addTimeout(TIMEOUT, reactor)
        collected = BodyCollector()
        response.deliverBody(collected)
        content = await collected.done.addTimeout(TIMEOUT, reactor)
        names = {k.decode().lower(): v[-1].decode() for k, v in response.headers.getAllRawHeaders()}
        return Reply(response.code, names, content)

    async def get(self, path: str, **kwargs: Any) -> Reply:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, body: Any = _DEFAULT, **kwargs: Any) -> Reply:
        return await self.request("POST", path, body, **kwargs)

    async def close(self) -> None:
        await self._pool.closeCachedConnections()


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)
