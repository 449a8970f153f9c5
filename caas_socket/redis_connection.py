"""Connections to Redis: the ``--redis`` URL and a bounded, reconnecting pool.

Shared by the Redis registry and the cluster bus.  Three URL forms::

    redis://[[user]:password@]host[:port][/db]
    rediss://[[user]:password@]host[:port][/db][?ca=/path/ca.pem]
    redis+sentinel://[[user]:password@]host1[:port1],host2[:port2]/service[/db]
        [?sentinel_password=...]

txredisapi keeps the pool connected (it reconnects with backoff on its own), but
a command issued while no connection is up waits for one, forever.  So every
call made through :class:`RedisConnection` is bounded by a timeout on the
clock we were given, and any failure to get an answer becomes
:class:`RedisUnavailable`.  TLS and Sentinel need small adapters because
txredisapi builds its endpoints on the global reactor and checks a master's role
on decoded text, while we read raw bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Coroutine, Sequence
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import attrs
import txredisapi
from cryptography import x509
from OpenSSL import crypto
from twisted.internet import ssl

# The trust-root interface is public API, but Twisted only defines it here.
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IReactorTCP, IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from caas_socket.registry.interfaces import RegistryUnavailable

__all__ = ["LuaScript", "RedisConnection", "RedisURL", "RedisUnavailable", "connect", "open_pool"]

_SCHEMES = {"redis": 6379, "rediss": 6379, "redis+sentinel": 26379}
#: Error replies meaning "this server cannot serve right now", not "your command is wrong".
_TRANSIENT = ("READONLY", "LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "OOM", "NOREPLICAS")


class RedisUnavailable(RegistryUnavailable):
    """Redis did not answer in time, or cannot be reached, or cannot serve now."""


@attrs.frozen
class RedisURL:
    """A parsed ``--redis`` value; build it with :meth:`parse`."""

    hosts: tuple[tuple[str, int], ...]
    db: int = 0
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    tls: bool = False
    ca_file: str | None = None
    service_name: str | None = None
    sentinel_password: str | None = attrs.field(default=None, repr=False)

    @property
    def is_sentinel(self) -> bool:
        return self.service_name is not None

    @classmethod
    def parse(cls, text: str) -> RedisURL:
        """Parse and validate; every mistake is a ``ValueError`` naming ``--redis``."""
        try:
            parts = urlsplit(text)
        except ValueError as e:  # unbalanced brackets
            raise _bad(text, str(e)) from None
        scheme = parts.scheme.lower()
        if scheme not in _SCHEMES:
            raise _bad(text, "the scheme must be redis://, rediss:// or redis+sentinel://")
        if parts.fragment:
            raise _bad(text, "a fragment (#...) makes no sense here")
        userinfo, _, hostlist = parts.netloc.rpartition("@")
        username, password = _userinfo(userinfo)
        hosts = tuple(_host_port(h, _SCHEMES[scheme], text) for h in hostlist.split(","))
        path = [unquote(p) for p in parts.path.split("/")[1:]]
        if path and path[-1] == "":
            path.pop()  # a trailing slash
        query = _query(parts.query, text)
        ca = query.pop("ca", None)
        sentinel_password = query.pop("sentinel_password", None)
        if query:
            raise _bad(text, f"unknown query parameter(s): {', '.join(sorted(query))}")
        if ca is not None and scheme != "rediss":
            raise _bad(text, "?ca= is only meaningful with rediss://")
        if scheme == "redis+sentinel":
            if not path or not path[0]:
                raise _bad(text, "a Sentinel URL needs the service name: .../service_name[/db]")
            service, db = path[0], _db(path[1:], text)
        else:
            if sentinel_password is not None:
                raise _bad(text, "?sentinel_password= is only meaningful with redis+sentinel://")
            if len(hosts) != 1:
                raise _bad(text, "several hosts are only allowed with redis+sentinel://")
            service, db = None, _db(path, text)
        return cls(
            hosts=hosts,
            db=db,
            username=username,
            password=password,
            tls=scheme == "rediss",
            ca_file=ca,
            service_name=service,
            sentinel_password=sentinel_password,
        )

    def redacted(self) -> str:
        """The URL without secrets, for logs."""
        scheme = "redis+sentinel" if self.is_sentinel else "rediss" if self.tls else "redis"
        auth = "***@" if self.password is not None else ""
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.hosts)
        service = f"/{self.service_name}" if self.is_sentinel else ""
        return f"{scheme}://{auth}{hosts}{service}/{self.db}"


def _bad(text: str, why: str) -> ValueError:
    scheme, sep, rest = text.partition("://")
    if sep and "@" in rest:  # never echo a password
        text = f"{scheme}://***@{rest.rpartition('@')[2]}"
    return ValueError(f"--redis {text!r}: {why}")


def _userinfo(userinfo: str) -> tuple[str | None, str | None]:
    if not userinfo:
        return None, None
    user, colon, password = userinfo.partition(":")
    return (unquote(user) or None), (unquote(password) if colon else None)


def _host_port(item: str, default_port: int, text: str) -> tuple[str, int]:
    if item.startswith("["):
        host, bracket, rest = item[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise _bad(text, f"bad IPv6 address {item!r}")
        port_text = rest[1:] if rest else ""
    else:
        host, _, port_text = item.partition(":")
    if not host:
        raise _bad(text, "a host is missing")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise _bad(text, f"bad port {port_text!r}")
    return host, int(port_text)


def _db(path: list[str], text: str) -> int:
    if not path:
        return 0
    if len(path) > 1 or not path[0].isdigit():
        raise _bad(text, f"the database must be a number, got {'/'.join(path)!r}")
    return int(path[0])


def _query(query: str, text: str) -> dict[str, str]:
    parsed = parse_qs(query, keep_blank_values=True, strict_parsing=False)
    out = {}
    for name, values in parsed.items():
        if len(values) != 1 or not values[0]:
            raise _bad(text, f"?{name}= needs exactly one non-empty value")
        out[name] = values[0]
    return out


@attrs.frozen
class LuaScript:
    """A Lua script and its SHA1, for EVALSHA with a fallback to EVAL."""

    name: str
    source: bytes = attrs.field(repr=False)
    sha1: str = attrs.field(init=False)

    @sha1.default
    def _sha1(self) -> str:
        return hashlib.sha1(self.source).hexdigest()


@implementer(IOpenSSLTrustRoot)
class _PlatformTrustPlus:
    """The platform's CAs plus the ones of ``?ca=``: a private CA is *added*, not substituted."""

    def __init__(self, certificates: Sequence[crypto.X509]) -> None:
        self._certificates = certificates

    def _addCACertsToContext(self, context: Any) -> None:
        ssl.platformTrust()._addCACertsToContext(context)
        store = context.get_cert_store()
        for certificate in self._certificates:
            store.add_cert(certificate)


def _load_ca(path: str) -> list[crypto.X509]:
    try:
        with open(path, "rb") as f:
            certificates = x509.load_pem_x509_certificates(f.read())
    except (OSError, ValueError) as e:
        raise ValueError(f"--redis: ?ca={path} is not a readable PEM CA file: {e}") from None
    return [crypto.X509.from_cryptography(c) for c in certificates]


def _direct_endpoint(url: RedisURL, reactor: IReactorTCP, timeout: float) -> IStreamClientEndpoint:
    host, port = url.hosts[0]
    endpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)
    if not url.tls:
        return endpoint
    trust = _PlatformTrustPlus(_load_ca(url.ca_file)) if url.ca_file else ssl.platformTrust()
    # optionsForClientTLS verifies the certificate against the host name
    # (service_identity), which a bare ClientContextFactory would not.
    return wrapClientTLS(ssl.optionsForClientTLS(host, trustRoot=trust), endpoint)


@implementer(IStreamClientEndpoint)
class _SentinelEndpoint:
    """Ask Sentinel where the master is before every connection attempt."""

    log = Logger()

    def __init__(self, url: RedisURL, reactor: IReactorTCP, timeout: float) -> None:
        self._url, self._reactor, self._timeout = url, reactor, timeout
        self.sentinel = txredisapi.Sentinel(
            list(url.hosts),
            password=url.sentinel_password,
            connectTimeout=timeout,
            replyTimeout=timeout,
        )
        self.sentinel.discovery_timeout = timeout
        self._master: tuple[str, int] | None = None
        self.factory: txredisapi.RedisFactory | None = None

    def connect(self, protocol_factory: Any) -> Deferred[Any]:
        d = self.sentinel.discover_master(self._url.service_name)
        return d.addCallback(self._connect_to, protocol_factory)

    def _connect_to(self, address: tuple[str, int], protocol_factory: Any) -> Deferred[Any]:
        if self._master is not None and address != self._master and self.factory is not None:
            self.log.info("Redis master moved to {host}:{port}", host=address[0], port=address[1])
            for conn in list(self.factory.pool):
                conn.transport.loseConnection()
        self._master = address
        host, port = address
        endpoint = HostnameEndpoint(self._reactor, host, port, timeout=self._timeout)
        return endpoint.connect(protocol_factory)


class _MasterOnlyProtocol(txredisapi.RedisProtocol):
    """Drop a server that is not a master (Sentinel may lag behind a failover)."""

    def connectionMade(self) -> Deferred[Any]:
        if self.password is not None:
            self.auth(self.password, self.username)

        def check(role: Any) -> Any:
            first = role[0] if isinstance(role, list) and role else b""
            if (first.decode() if isinstance(first, bytes) else first) != "master":
                self.transport.loseConnection()
                return None
            return txredisapi.RedisProtocol.connectionMade(self)

        def failed(_: Failure) -> None:
            self.transport.loseConnection()

        return self.role().addCallbacks(check, failed)


class _PoolFactory(txredisapi.RedisFactory):
    """txredisapi's pool, with our reactor for its timers and raw-bytes replies."""

    initialDelay = 0.1  # reconnect quickly after a Redis restart ...
    maxDelay = 2.0  # ... and never wait long once it is back

    def __init__(self, url: RedisURL, reactor: Any, pool_size: int, timeout: float) -> None:
        super().__init__(
            None,
            url.db or None,
            pool_size,
            isLazy=True,
            charset=None,
            password=url.password,
            replyTimeout=timeout,
            convertNumbers=False,
            username=url.username,
        )
        self._reactor = reactor
        if url.is_sentinel:
            self.protocol = _MasterOnlyProtocol

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        protocol.callLater = self._reactor.callLater  # reply timeouts on our clock
        return protocol

    def _connectionReady(self, conn: Any) -> None:
        self._reactor.callLater(0, self.addConnection, conn)


class RedisConnection:
    """A connection pool whose every call is bounded by a timeout.

    :param timeout: default bound, in seconds, of one call (a script with its
        NOSCRIPT fallback counts as one call).
    """

    log = Logger()
    #: ``observer(what, seconds, ok)`` after every call, timed on our reactor: the hook
    #: of latency metrics, so this module needs no metrics library.  ``None`` costs
    #: one attribute read per call.
    observer: Callable[[str, float, bool], None] | None = None

    def __init__(self, url: RedisURL, reactor: Any, *, pool_size: int, timeout: float) -> None:
        self.url, self.timeout, self._reactor = url, timeout, reactor
        self._sentinel: _SentinelEndpoint | None = None
        self._factory = _PoolFactory(url, reactor, pool_size, timeout)
        if url.is_sentinel:
            self._sentinel = _SentinelEndpoint(url, reactor, timeout)
            self._sentinel.factory = self._factory
            #: Where the pool connects; reuse it for a subscriber connection.
            self.endpoint: IStreamClientEndpoint = self._sentinel
        else:
            self.endpoint = _direct_endpoint(url, reactor, timeout)
        self._factory.startConnecting(self.endpoint)

    async def execute(
        self, *args: Any, within: float | None = None, clock: IReactorTime | None = None
    ) -> Any:
        """Run one command; :class:`RedisUnavailable` if it does not complete in time."""
        return await self._bounded(self._send(*args), str(args[0]), within, clock)

    async def run_script(
        self,
        script: LuaScript,
        args: Sequence[Any],
        *,
        within: float | None = None,
        clock: IReactorTime | None = None,
    ) -> Any:
        """EVALSHA, or EVAL when Redis lost its script cache (a restart, SCRIPT FLUSH)."""
        return await self._bounded(self._script(script, args), script.name, within, clock)

    async def _script(self, script: LuaScript, args: Sequence[Any]) -> Any:
        try:
            return await self._send("EVALSHA", script.sha1, 0, *args)
        except txredisapi.ResponseError as e:
            if not str(e).startswith("NOSCRIPT"):
                raise
        self.log.debug("loading script {name}", name=script.name)
        return await self._send("EVAL", script.source, 0, *args)

    def _send(self, *args: Any) -> Deferred[Any]:
        return self._factory.handler.execute_command(*args)

    async def _bounded(
        self,
        coro: Deferred[Any] | Coroutine[Any, Any, Any],
        what: str,
        within: float | None,
        clock: IReactorTime | None,
    ) -> Any:
        limit = self.timeout if within is None else within
        observer = self.observer
        started = self._reactor.seconds() if observer is not None else 0.0
        ok = False
        d = ensureDeferred(coro)
        d.addTimeout(limit, clock or self._reactor)
        try:
            result = await d
            ok = True
            return result
        except DeferredTimeout:
            raise RedisUnavailable(f"Redis did not answer {what} within {limit}s") from None
        except txredisapi.ConnectionError as e:
            raise RedisUnavailable(f"Redis connection failed during {what}: {e}") from None
        except txredisapi.ResponseError as e:
            if str(e).startswith(_TRANSIENT):
                raise RedisUnavailable(f"Redis cannot serve {what}: {e}") from None
            raise
        finally:
            if observer is not None:
                self._observe(observer, what, self._reactor.seconds() - started, ok)

    def _observe(
        self, observer: Callable[[str, float, bool], None], what: str, seconds: float, ok: bool
    ) -> None:
        """A failing observer costs a log line, never the Redis call it measured."""
        try:
            observer(what, seconds, ok)
        except Exception:
            self.log.failure("Redis call observer failed for {what}", what=what)

    async def disconnect(self) -> None:
        """Close the pool (and the Sentinel connections) for good."""
        await self._factory.disconnect()
        if self._sentinel is not None:
            await self._sentinel.sentinel.disconnect()


def open_pool(
    url: str | RedisURL, reactor: Any, *, pool_size: int = 4, timeout: float = 1.0
) -> RedisConnection:
    """Start a pool without waiting: the service may start while Redis is down."""
    parsed = url if isinstance(url, RedisURL) else RedisURL.parse(url)
    if pool_size < 1 or timeout <= 0:
        raise ValueError("pool_size must be >= 1 and timeout > 0")
    return RedisConnection(parsed, reactor, pool_size=pool_size, timeout=timeout)


async def connect(
    url: str | RedisURL,
    reactor: Any,
    *,
    pool_size: int = 4,
    timeout: float = 1.0,
) -> RedisConnection:
    """Start a pool and wait (at most ``timeout``) until Redis answers a PING."""
    connection = open_pool(url, reactor, pool_size=pool_size, timeout=timeout)
    try:
        await connection.execute("PING")
    except BaseException:
        await connection.disconnect()
        raise
    return connection
