"""A command client for plain synchronous code: a socket, RESP, no reactor, no new dependency.

Services written with Django, Flask, Celery or a script publish commands with
it; it opens one connection lazily, keeps it, and serialises calls with a lock
so one client may be shared by threads.

Delivery is *at most once*: a PUBLISH whose reply does not arrive in time is
reported, never repeated, because it may have reached the nodes already.  The
one case made safe to repeat is a connection that died while idle (Redis
restarted, a proxy timed it out): that is noticed *before* sending, the socket
is readable with nothing pending, and a fresh connection is opened.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
from typing import Any, Self

from caas_socket.app.commands import Command
from caas_socket.redis_connection import _TRANSIENT, RedisUnavailable, RedisURL

from .base import CommandSender
from .resp import INCOMPLETE, ProtocolError, ReplyReader, RespError, encode_request

__all__ = ["CommandClient", "RedisUnavailable", "RespError"]

#: Error replies that are about who we are, not about the command: a configuration problem.
_REFUSALS = ("NOAUTH", "WRONGPASS", "NOPERM")


class _Connection:
    """One open socket (TLS or not) and its reply reader."""

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self.sock = sock
        self.sock.settimeout(timeout)
        self.reader = ReplyReader()

    def call(self, *args: Any) -> Any:
        """Send one command and read its reply; an error reply is raised as :class:`RespError`."""
        self.sock.sendall(encode_request(*args))
        while True:
            reply = self.reader.next_reply()
            if reply is not INCOMPLETE:
                if isinstance(reply, RespError):
                    raise reply
                return reply
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionResetError("Redis closed the connection")
            self.reader.feed(data)

    def looks_dead(self) -> bool:
        """Readable while idle means closed by the peer (or garbage): not worth a send."""
        if self.reader.pending:
            return True
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return True
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def close(self) -> None:
        self.sock.close()


def _tls(sock: socket.socket, url: RedisURL, host: str) -> socket.socket:
    # The platform's CAs plus ?ca=, and the host name checked, as the nodes do.
    context = ssl.create_default_context()
    if url.ca_file:
        context.load_verify_locations(cafile=url.ca_file)
    return context.wrap_socket(sock, server_hostname=host)


class CommandClient(CommandSender[int]):
    """Publishes commands to every node from blocking code.

    ::

        with CommandClient("rediss://:secret@redis.internal:6380/0") as caas:
            if caas.emit_to_user("acme", "alice", "invoice", {"id": 42}) == 0:
                log.warning("no caas-socket node is listening")

    :param url: ``redis://``, ``rediss://`` (TLS, host name checked, ``?ca=``
        adds a CA) or ``redis+sentinel://``, exactly as the nodes' ``--redis``.
    :param prefix: the nodes' ``--redis-prefix``.
    :param timeout: bound, in seconds, of connecting and of every call.
    :raises ValueError: for a malformed URL (the message names ``--redis``).
    """

    def __init__(self, url: str | RedisURL, *, prefix: str = "caas:", timeout: float = 2.0) -> None:
        super().__init__(prefix)
        self.url = url if isinstance(url, RedisURL) else RedisURL.parse(url)
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        self.timeout = timeout
        self._lock = threading.Lock()
        self._connection: _Connection | None = None

    # -- connection ----------------------------------------------------------

    def _open_to(self, host: str, port: int) -> _Connection:
        sock = socket.create_connection((host, port), timeout=self.timeout)
        try:
            if self.url.tls:
                sock = _tls(sock, self.url, host)
            connection = _Connection(sock, self.timeout)
            if self.url.password is not None:
                if self.url.username:
                    connection.call("AUTH", self.url.username, self.url.password)
                else:
                    connection.call("AUTH", self.url.password)
            if self.url.db:
                connection.call("SELECT", self.url.db)
        except BaseException:
            sock.close()
            raise
        return connection

    def _master(self) -> tuple[str, int]:
        """Ask each Sentinel in turn where the master of the service is."""
        problems = []
        for host, port in self.url.hosts:
            try:
                with socket.create_connection((host, port), timeout=self.timeout) as sock:
                    sentinel = _Connection(sock, self.timeout)
                    if self.url.sentinel_password is not None:
                        sentinel.call("AUTH", self.url.sentinel_password)
                    reply = sentinel.call(
                        "SENTINEL", "get-master-addr-by-name", self.url.service_name or ""
                    )
            except (OSError, RespError, ProtocolError) as e:
                problems.append(f"{host}:{port}: {e}")
                continue
            if isinstance(reply, list) and len(reply) == 2:
                return reply[0].decode(), int(reply[1])
            problems.append(f"{host}:{port}: does not know {self.url.service_name!r}")
        raise OSError("no Sentinel named a master: " + "; ".join(problems))

    def _open(self) -> _Connection:
        if not self.url.is_sentinel:
            return self._open_to(*self.url.hosts[0])
        connection = self._open_to(*self._master())
        role = connection.call("ROLE")
        if not (isinstance(role, list) and role and role[0] == b"master"):
            connection.close()
            raise OSError("the server Sentinel named is not a master (a failover in progress?)")
        return connection

    def _connect(self) -> _Connection:
        try:
            return self._open()
        except (OSError, ProtocolError, RespError) as e:
            why = "timed out" if isinstance(e, TimeoutError) else str(e) or type(e).__name__
            raise RedisUnavailable(f"cannot connect to {self.url.redacted()}: {why}") from None

    def _call(self, *args: Any) -> Any:
        with self._lock:
            if self._connection is not None and self._connection.looks_dead():
                self._drop()
            if self._connection is None:
                self._connection = self._connect()
            try:
                return self._connection.call(*args)
            except RespError as e:
                if e.message.startswith(_TRANSIENT):
                    raise RedisUnavailable(f"{self.url.redacted()} cannot serve now: {e}") from None
                if e.code in _REFUSALS:
                    raise RedisUnavailable(
                        f"{self.url.redacted()} refused {args[0]}: {e}"
                    ) from None
                raise
            except (OSError, ProtocolError) as e:
                # Timeouts included: the connection's state is unknown, so it goes.
                self._drop()
                if isinstance(e, TimeoutError):
                    why = f"did not answer {args[0]} within {self.timeout}s"
                else:
                    why = f"failed during {args[0]}: {e or type(e).__name__}"
                raise RedisUnavailable(f"{self.url.redacted()} {why}") from None

    def _drop(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    # -- API -----------------------------------------------------------------

    def publish(self, command: Command, payload: bytes) -> int:
        """PUBLISH on ``{prefix}api``; returns how many subscribers (nodes) received it.

        :raises RedisUnavailable: Redis could not be reached or did not answer
            within ``timeout``; the command may or may not have been delivered.
        """
        reply = self._call("PUBLISH", self.channel, payload)
        if not isinstance(reply, int):
            raise RedisUnavailable(f"{self.url.redacted()}: PUBLISH answered {reply!r}")
        return reply

    def ping(self) -> None:
        """Check that Redis answers (connecting if needed)."""
        self._call("PING")

    def close(self) -> None:
        """Close the connection; the client reconnects if used again."""
        with self._lock:
            self._drop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
