"""A bounded, reconnecting pool of Redis connections (the URL is :mod:`.redis_url`).

Shared by the Redis registry and the cluster bus.  txredisapi keeps the pool
connected (it reconnects with backoff on its own), but a command issued while
no connection is up waits for one, forever.  So every call made through
:class:`RedisConnection` goes straight to a live connection of the pool (or
fails at once when there is none), is bounded by a timeout on the clock we
were given, and any failure to get an answer becomes
:class:`RedisUnavailable`; a connection that let a call time out is dropped,
so the pool replaces it.  The timeouts share one timer wheel rather than a
``DelayedCall`` each (two per call before: ours and txredisapi's).

TLS and Sentinel need small adapters because
txredisapi builds its endpoints on the global reactor and checks a master's role
on decoded text, while we read raw bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import txredisapi
from cryptography import x509
from OpenSSL import crypto
from twisted.internet import defer, ssl

# The trust-root interface is public API, but Twisted only defines it here.
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IReactorTCP, IReactorTime, IStreamClientEndpoint
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from caas_socket.redis_url import RedisURL
from caas_socket.registry.interfaces import RegistryUnavailable
from caas_socket.timers import TimerWheel

__all__ = ["LuaScript", "RedisConnection", "RedisURL", "RedisUnavailable", "connect", "open_pool"]

#: Error replies meaning "this server cannot serve right now", not "your command is wrong".
_TRANSIENT = ("READONLY", "LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "OOM", "NOREPLICAS")


class RedisUnavailable(RegistryUnavailable):
    """Redis did not answer in time, or cannot be reached, or cannot serve now."""


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
            replyTimeout=None,  # RedisConnection bounds every call itself
            convertNumbers=False,
            username=url.username,
        )
        self._reactor = reactor
        if url.is_sentinel:
            self.protocol = _MasterOnlyProtocol

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
        self._wheels: dict[int, TimerWheel] = {}
        self._next = 0

    async def execute(
        self, *args: Any, within: float | None = None, clock: IReactorTime | None = None
    ) -> Any:
        """Run one command; :class:`RedisUnavailable` if it does not complete in time."""
        return await self._bounded(self._send, args, str(args[0]), within, clock)

    async def run_script(
        self,
        script: LuaScript,
        args: Sequence[Any],
        *,
        within: float | None = None,
        clock: IReactorTime | None = None,
    ) -> Any:
        """EVALSHA, or EVAL when Redis lost its script cache (a restart, SCRIPT FLUSH)."""
        return await self._bounded(self._script, (script, args), script.name, within, clock)

    def _script(self, protocol: Any, script: LuaScript, args: Sequence[Any]) -> Deferred[Any]:
        def reload(failure: Failure) -> Deferred[Any]:
            failure.trap(txredisapi.ResponseError)
            if not str(failure.value).startswith("NOSCRIPT"):
                return failure  # type: ignore[return-value]
            self.log.debug("loading script {name}", name=script.name)
            return protocol.execute_command("EVAL", script.source, 0, *args)  # type: ignore[no-any-return]

        d: Deferred[Any] = protocol.execute_command("EVALSHA", script.sha1, 0, *args)
        return d.addErrback(reload)

    def _send(self, protocol: Any, *args: Any) -> Deferred[Any]:
        return protocol.execute_command(*args)  # type: ignore[no-any-return]

    def _connection(self) -> Any:
        """A live connection of the pool, taking turns (no queue, no waiting)."""
        pool = self._factory.pool
        for _ in range(len(pool)):
            self._next = (self._next + 1) % len(pool)
            protocol = pool[self._next]
            if protocol.connected:
                return protocol
        return None

    def _wheel(self, clock: IReactorTime) -> TimerWheel:
        wheel = self._wheels.get(id(clock))
        if wheel is None:
            wheel = self._wheels[id(clock)] = TimerWheel(clock, resolution=0.01)
        return wheel

    async def _bounded(
        self,
        call: Callable[..., Deferred[Any]],
        args: Sequence[Any],
        what: str,
        within: float | None,
        clock: IReactorTime | None,
    ) -> Any:
        limit = self.timeout if within is None else within
        observer = self.observer
        started = self._reactor.seconds() if observer is not None else 0.0
        ok = False
        clock = clock or self._reactor
        try:
            protocol = self._connection()
            if protocol is None:
                began = clock.seconds()
                protocol = await self._reconnected(clock, limit, what)
                limit -= clock.seconds() - began
            d = call(protocol, *args)
            timer = self._wheel(clock).call_later(limit, self._timed_out, d, protocol)
            try:
                result = await d
            finally:
                timer.cancel()
            ok = True
            return result
        except defer.CancelledError:
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

    async def _reconnected(self, clock: IReactorTime, limit: float, what: str) -> Any:
        """Wait (a bounded time) for the pool to have a live connection again."""
        deadline = clock.seconds() + limit
        while clock.seconds() < deadline:
            await deferLater(clock, min(0.01, limit))
            protocol = self._connection()
            if protocol is not None:
                return protocol
        raise RedisUnavailable(f"Redis did not answer {what} within {limit}s: no connection")

    @staticmethod
    def _timed_out(d: Deferred[Any], protocol: Any) -> None:
        """No answer in time: fail the call, and drop the connection it is stuck on."""
        if not d.called:
            d.cancel()
        if protocol.connected and protocol.transport is not None:
            protocol.transport.abortConnection()

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
