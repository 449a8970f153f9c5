"""Drive the official socket.io-client from Twisted tests, through ``tests/interop/driver.mjs``.

One node process holds many clients; commands go to its stdin as JSON lines,
events come back on its stdout.  A reader thread hands each event to the
reactor thread (``callFromThread``), where :meth:`SioDriver.wait_for` Deferreds
fire, so ``@pytest_twisted.ensureDeferred async def`` tests simply ``await``
them and the reactor is never blocked::

    driver = SioDriver(reactor).start()
    driver.connect("c1", node.url, auth={"token": token}, query={"deviceId": "d1"})
    connected = await driver.wait_for("c1", "connect")
    driver.emit("c1", "heartbeat")
    beat = await driver.wait_for("c1", "heartbeat")
    driver.stop()

Events are dicts with ``id`` (the client), ``type`` (``connect``,
``connect_error``, ``disconnect``, ``event``, ``ack``, ...), ``t`` (node's
``Date.now()``) and ``received`` (``time.monotonic()`` here).  Binary values
are ``bytes`` on this side.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Self

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

__all__ = ["DRIVER", "DriverError", "SioDriver", "decode_value", "encode_value"]

INTEROP = Path(__file__).resolve().parents[1] / "interop"
DRIVER = INTEROP / "driver.mjs"
NODE_MODULES = INTEROP / "node_modules"
INSTALL_HINT = "run: npm ci --prefix tests/interop"


class DriverError(RuntimeError):
    """The driver process is missing, died, or reported an error."""


def encode_value(value: Any) -> Any:
    """``bytes`` become ``{"$bin": base64}``, recursively, for the driver."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bin": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, list | tuple):
        return [encode_value(v) for v in value]
    if isinstance(value, dict):
        return {k: encode_value(v) for k, v in value.items()}
    return value


def decode_value(value: Any) -> Any:
    """The inverse of :func:`encode_value`."""
    if isinstance(value, list):
        return [decode_value(v) for v in value]
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get("$bin"), str):
            return base64.b64decode(value["$bin"])
        return {k: decode_value(v) for k, v in value.items()}
    return value


def _names(name: str | tuple[str, ...]) -> tuple[str, ...]:
    return (name,) if isinstance(name, str) else name


def _matches(
    event: dict[str, Any], client_id: str | None, names: tuple[str, ...], fields: dict[str, Any]
) -> bool:
    if client_id is not None and event.get("id") != client_id:
        return False
    kind = event.get("type")
    if kind not in names and not (kind == "event" and event.get("name") in names):
        return False
    return all(event.get(k) == v for k, v in fields.items())


class _Waiter:
    __slots__ = ("client_id", "deferred", "fields", "names", "timer")

    def __init__(
        self,
        client_id: str | None,
        names: tuple[str, ...],
        fields: dict[str, Any],
        deferred: Deferred[Any],
    ) -> None:
        self.client_id = client_id
        self.names = names
        self.fields = fields
        self.deferred = deferred
        self.timer: Any = None


class SioDriver:
    """A ``node driver.mjs`` process and the events of its clients.

    :param reactor: the running reactor (the one pytest-twisted runs).
    :param node: the node executable.
    """

    def __init__(self, reactor: Any, *, node: str = "node") -> None:
        self._reactor = reactor
        self._node = node
        self._proc: subprocess.Popen[bytes] | None = None
        self._threads: list[threading.Thread] = []
        self.events: list[dict[str, Any]] = []
        self._consumed: set[int] = set()
        self._waiters: list[_Waiter] = []
        self.stderr: list[str] = []
        self._refs = itertools.count(1)
        self._write_lock = threading.Lock()

    # -- process -----------------------------------------------------------------

    def start(self) -> Self:
        """Spawn node; the driver is usable at once (commands queue in its stdin)."""
        if not NODE_MODULES.joinpath("socket.io-client").is_dir():
            raise DriverError(f"{NODE_MODULES} has no socket.io-client; {INSTALL_HINT}")
        node = shutil.which(self._node)
        if node is None:
            raise DriverError(f"{self._node!r} is not on PATH")
        self._proc = subprocess.Popen(
            [node, str(DRIVER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=INTEROP,
        )
        for target, stream in ((self._read_events, "stdout"), (self._read_stderr, "stderr")):
            thread = threading.Thread(
                target=target, name=f"sio-driver-{self._proc.pid}-{stream}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def _read_events(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for raw in self._proc.stdout:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                event = {"type": "garbage", "line": line}
            event["received"] = time.monotonic()
            self._reactor.callFromThread(self._received, event)
        exited = {"type": "exited", "received": time.monotonic()}
        self._reactor.callFromThread(self._received, exited)

    def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for raw in self._proc.stderr:
            self.stderr.append(raw.decode("utf-8", "replace").rstrip())

    def stop(self, timeout: float = 3.0) -> None:
        """Ask the driver to exit (its clients disconnect), then kill it by PID if needed."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                self._send({"cmd": "exit"})
                proc.stdin.close()  # type: ignore[union-attr]
            except (OSError, ValueError):
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5.0)
        for thread in self._threads:
            thread.join(2.0)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        for waiter in list(self._waiters):
            self._drop(waiter, DriverError("driver stopped"))

    def __enter__(self) -> Self:
        return self.start() if self._proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- commands ----------------------------------------------------------------

    def _send(self, command: dict[str, Any]) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.poll() is not None:
            raise DriverError(f"driver is not running; stderr:\n{self._stderr_tail()}")
        data = (json.dumps(command, separators=(",", ":")) + "\n").encode()
        with self._write_lock:
            proc.stdin.write(data)
            proc.stdin.flush()

    def command(self, cmd: str, client_id: str | None = None, **fields: Any) -> str:
        """Send any command; returns its ``ref`` (echoed in the events it causes)."""
        ref = fields.pop("ref", None) or f"r{next(self._refs)}"
        message: dict[str, Any] = {"cmd": cmd, "ref": ref, **fields}
        if client_id is not None:
            message["id"] = client_id
        self._send(message)
        return ref

    def connect(
        self,
        client_id: str,
        url: str,
        *,
        auth: dict[str, Any] | None = None,
        query: dict[str, str] | None = None,
        acks: dict[str, list[Any]] | None = None,
        **opts: Any,
    ) -> None:
        """Create client ``client_id`` with ``io(url, {...app options, auth, query, ...opts})``.

        :param acks: server events to acknowledge, with the ack arguments, registered
            before the client connects (a connect handler's ``socket.call`` sees them).
        :param opts: socket.io-client options overriding the apps' defaults
            (``transports: ["websocket"]``, ``reconnectionAttempts: 10``,
            ``reconnectionDelay: 1000``, ``reconnectionDelayMax: 30000``).
        """
        fields: dict[str, Any] = {"url": url, "opts": opts}
        if auth is not None:
            fields["auth"] = encode_value(auth)
        if query is not None:
            fields["query"] = query
        if acks:
            fields["acks"] = {k: encode_value(list(v)) for k, v in acks.items()}
        self.command("connect", client_id, **fields)

    def emit(
        self, client_id: str, event: str, *args: Any, ack: bool = False, timeout: int | None = None
    ) -> str:
        """``socket.emit(event, ...args)``; with ``ack``, an ``ack`` event with this ref follows.

        :param timeout: milliseconds, for ``socket.timeout(ms).emit(...)``.
        """
        fields: dict[str, Any] = {"event": event, "args": encode_value(list(args)), "ack": ack}
        if timeout is not None:
            fields["timeout"] = timeout
        return self.command("emit", client_id, **fields)

    def on_ack(self, client_id: str, event: str, *args: Any) -> str:
        """Acknowledge every ``event`` from the server with ``args``."""
        return self.command("on-ack", client_id, event=event, args=encode_value(list(args)))

    def open(self, client_id: str) -> str:
        """``socket.connect()`` again, e.g. after a refused CONNECT."""
        return self.command("open", client_id)

    def disconnect(self, client_id: str) -> str:
        return self.command("disconnect", client_id)

    def close_engine(self, client_id: str) -> str:
        """Drop the client's TCP connection without a WebSocket close frame."""
        return self.command("close-engine", client_id)

    def pause_pongs(self, client_id: str) -> str:
        """Stop answering the server's pings (the client keeps believing all is well)."""
        return self.command("pause-pongs", client_id)

    def resume_pongs(self, client_id: str) -> str:
        return self.command("resume-pongs", client_id)

    # -- events ------------------------------------------------------------------

    def _received(self, event: dict[str, Any]) -> None:
        if event.get("type") in ("event", "ack") and "args" in event:
            event["args"] = decode_value(event["args"])
        if event.get("type") == "connect_error" and "data" in event:
            event["data"] = decode_value(event["data"])
        index = len(self.events)
        self.events.append(event)
        for waiter in list(self._waiters):
            if _matches(event, waiter.client_id, waiter.names, waiter.fields):
                self._consumed.add(index)
                self._waiters.remove(waiter)
                waiter.timer.cancel()
                waiter.deferred.callback(event)
                break
        if event.get("type") == "exited":
            for waiter in list(self._waiters):
                self._drop(waiter, DriverError(f"driver exited; stderr:\n{self._stderr_tail()}"))

    def _drop(self, waiter: _Waiter, error: Exception) -> None:
        if waiter in self._waiters:
            self._waiters.remove(waiter)
            if waiter.timer.active():
                waiter.timer.cancel()
            waiter.deferred.errback(error)

    def _find(
        self, client_id: str | None, names: tuple[str, ...], fields: dict[str, Any]
    ) -> int | None:
        for index, event in enumerate(self.events):
            if index not in self._consumed and _matches(event, client_id, names, fields):
                return index
        return None

    def wait_for(
        self,
        client_id: str | None,
        name: str | tuple[str, ...],
        timeout: float = 5.0,
        **fields: Any,
    ) -> Deferred[dict[str, Any]]:
        """The next not-yet-returned event ``name`` of ``client_id``.

        ``name`` is an event type (``connect``, ``disconnect``, ``ack``...) or
        the name of a server event, or a tuple of them (the first to come
        wins).  ``fields`` must all equal the event's (e.g. ``ref=...`` for an
        ack).  Events that arrived before the call count, so there is no race;
        each event is returned once.  Fails with :class:`TimeoutError` listing
        the client's events.
        """
        names = _names(name)
        result: Deferred[dict[str, Any]] = Deferred()
        index = self._find(client_id, names, fields)
        if index is not None:
            self._consumed.add(index)
            result.callback(self.events[index])
            return result
        if self._proc is None or self._proc.poll() is not None:
            result.errback(DriverError(f"driver is not running; stderr:\n{self._stderr_tail()}"))
            return result
        waiter = _Waiter(client_id, names, fields, result)
        waiter.timer = self._reactor.callLater(
            timeout,
            self._drop,
            waiter,
            TimeoutError(
                f"no {name!r} event {fields or ''} for client {client_id!r} within {timeout}s;"
                f" its events:\n{self.describe(client_id)}"
            ),
        )
        self._waiters.append(waiter)
        return result

    async def ack(self, client_id: str, ref: str, timeout: float = 5.0) -> list[Any]:
        """The arguments of the ack of the emit ``ref``; :class:`DriverError` on an ack timeout."""
        event = await self.wait_for(client_id, "ack", timeout, ref=ref)
        if "error" in event:
            raise DriverError(f"ack {ref} of client {client_id}: {event['error']}")
        args: list[Any] = event["args"]
        return args

    def seen(
        self, client_id: str | None, name: str | tuple[str, ...], **fields: Any
    ) -> list[dict[str, Any]]:
        """Every event ``name`` of ``client_id`` so far, returned by ``wait_for`` or not."""
        return [e for e in self.events if _matches(e, client_id, _names(name), fields)]

    async def quiet(
        self, client_id: str | None, name: str | tuple[str, ...], within: float, **fields: Any
    ) -> None:
        """Assert that no new event ``name`` arrives for ``client_id`` within ``within`` seconds."""
        before = len(self.seen(client_id, name, **fields))
        await self.sleep(within)
        new = self.seen(client_id, name, **fields)[before:]
        assert not new, f"client {client_id} got unexpected {name!r}: {new}"

    async def sleep(self, seconds: float) -> None:
        await deferLater(self._reactor, seconds, lambda: None)

    async def connected(
        self, client_id: str, url: str, timeout: float = 5.0, **kwargs: Any
    ) -> dict[str, Any]:
        """:meth:`connect` and wait for ``connect``; a ``connect_error`` fails with its data."""
        self.connect(client_id, url, **kwargs)
        event = await self.wait_for(client_id, ("connect", "connect_error"), timeout)
        if event["type"] != "connect":
            raise DriverError(f"client {client_id} was refused: {event}")
        return event

    def describe(self, client_id: str | None = None) -> str:
        """The events (of one client, or all) as lines, for failure messages."""
        shown = [e for e in self.events if client_id is None or e.get("id") in (client_id, None)]
        return "\n".join(
            json.dumps({k: v for k, v in e.items() if k != "received"}, default=repr)
            for e in shown[-50:]
        )

    def _stderr_tail(self) -> str:
        return "\n".join(self.stderr[-30:])

    def errors(self) -> list[dict[str, Any]]:
        """Errors the driver reported (bad commands, exceptions inside node)."""
        return [e for e in self.events if e.get("type") == "error"]
