"""python-socketio's client against our servers: a CaaS node, the conformance example, an asker.

The synchronous ``socketio.Client`` runs in a reactor worker thread
(``deferToThread``) while the servers run on the reactor (in-process) or in
their own process, so neither side can starve the other.  Each scenario is a
plain function that connects, acts, always disconnects, and returns what the
client saw.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest_twisted
import socketio
import socketio.exceptions
from twisted.internet.threads import deferToThread

from examples.conformance_server import RunningServer
from tests.support.nodes import CaasNode

T = TypeVar("T")
WAIT = 5.0


def http_url(host: str | None, port: int | None) -> str:
    return f"http://{host}:{port}"


async def in_thread(scenario: Callable[[], T]) -> T:
    result: T = await deferToThread(scenario)
    return result


@contextmanager
def client(url: str, **connect: Any) -> Iterator[tuple[socketio.Client, queue.Queue[Any]]]:
    """A connected client and a queue of ``(event, args)`` it received; always disconnected."""
    sio = socketio.Client(reconnection=False)
    received: queue.Queue[Any] = queue.Queue()
    sio.on("*", lambda event, *args: received.put((event, args)))
    handlers = connect.pop("handlers", {})
    for event, handler in handlers.items():
        sio.on(event, handler, namespace=connect.get("namespaces", ["/"])[0])
    sio.connect(url, transports=["websocket"], wait_timeout=WAIT, **connect)
    try:
        yield sio, received
    finally:
        sio.disconnect()


def next_event(received: queue.Queue[Any], name: str) -> tuple[Any, ...]:
    """The args of the next event ``name`` (others before it are skipped)."""
    while True:
        event, args = received.get(timeout=WAIT)
        if event == name:
            return tuple(args)


# -- a CaaS node ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_connect_and_heartbeat(caas_node: Callable[..., CaasNode], secret: str, mint):
    node = caas_node("--jwt-secret", secret)
    token = mint("py-user")

    def scenario() -> tuple[str, dict[str, Any]]:
        url = http_url(node.host, node.port) + "?deviceId=py-laptop"
        with client(url, auth={"token": token}) as (sio, received):
            sid = sio.get_sid()
            sio.emit("heartbeat")
            (beat,) = next_event(received, "heartbeat")
            return sid, beat

    sid, beat = await in_thread(scenario)
    assert isinstance(beat["serverTime"], int)
    assert beat["serverTime"] > 0
    await node.log_match(rf"socket {sid} connected on /", 2)


@pytest_twisted.ensureDeferred
async def test_connect_error_data_for_a_bad_token(
    caas_node: Callable[..., CaasNode], secret: str, mint
):
    node = caas_node("--jwt-secret", secret)
    token = mint("py-user", key="some-other-secret-of-32-bytes-or-more")

    def scenario() -> tuple[list[Any], str]:
        errors: list[Any] = []
        sio = socketio.Client(reconnection=False)
        sio.on("connect_error", errors.append)
        try:
            sio.connect(
                http_url(node.host, node.port) + "?deviceId=py-1",
                auth={"token": token},
                transports=["websocket"],
                wait_timeout=WAIT,
            )
        except socketio.exceptions.ConnectionError as e:
            return errors, str(e)
        finally:
            sio.disconnect()
        return errors, "connected"

    errors, outcome = await in_thread(scenario)
    assert outcome.startswith("One or more namespaces failed to connect")
    assert errors == [{"message": "Authentication failed", "data": {"code": "invalid_signature"}}]


# -- the conformance example, in process -------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_ack_client_to_server(inprocess_conformance_server: RunningServer):
    server = inprocess_conformance_server

    def scenario() -> tuple[Any, Any]:
        with client(http_url(server.host, server.port_number)) as (sio, _):
            # python-socketio passes several arguments as a tuple.
            several = sio.call("message-with-ack", (1, "2", {"3": [True]}), timeout=WAIT)
            one = sio.call("message-with-ack", "only", timeout=WAIT)
            return several, one

    several, one = await in_thread(scenario)
    assert several == (1, "2", {"3": [True]})
    assert one == "only"


@pytest_twisted.ensureDeferred
async def test_ack_server_to_client(asking_server: RunningServer):
    """The server's ``socket.call("ask", 1)`` gets the client handler's return value."""
    server = asking_server
    asked: list[Any] = []

    def ask(number: int) -> int:
        asked.append(number)
        return number + 41

    def scenario() -> tuple[Any, ...]:
        url = http_url(server.host, server.port_number)
        with client(url, handlers={"ask": ask}) as (_, received):
            return next_event(received, "answer")

    assert await in_thread(scenario) == (42,)
    assert asked == [1]


@pytest_twisted.ensureDeferred
async def test_binary_round_trip(inprocess_conformance_server: RunningServer):
    server = inprocess_conformance_server
    every_byte = bytes(range(256))
    nested = {"file": every_byte * 100, "parts": [b"", b"\x00", b"\xff" * 3], "name": "x.bin"}

    def scenario() -> tuple[Any, Any]:
        with client(http_url(server.host, server.port_number)) as (sio, received):
            sio.emit("message", (every_byte, nested))
            echoed = next_event(received, "message-back")
            acked = sio.call("message-with-ack", (nested, every_byte), timeout=WAIT)
            return echoed, acked

    echoed, acked = await in_thread(scenario)
    assert echoed == (every_byte, nested)
    assert acked == (nested, every_byte)


@pytest_twisted.ensureDeferred
async def test_custom_namespace_sees_its_auth(inprocess_conformance_server: RunningServer):
    server = inprocess_conformance_server

    def scenario() -> tuple[Any, ...]:
        url = http_url(server.host, server.port_number)
        with client(url, namespaces=["/custom"], auth={"token": "abc"}) as (sio, _):
            got: queue.Queue[Any] = queue.Queue()
            sio.emit("message-with-ack", "hi", namespace="/custom", callback=got.put)
            return got.get(timeout=WAIT)

    assert await in_thread(scenario) == "hi"
