"""Fixtures of the command-client and ``caas-socketctl`` tests.

Reused as they are: ``redis_server``/``clean_redis`` (tests/conftest.py), and
``caas_node``, ``sio``, ``mint``, ``secret`` with the failure report of
``tests/interop``.  What this adds:

* :class:`Subscriber`: a raw RESP connection SUBSCRIBEd to a channel, to see
  the exact bytes a client published (no client code on the reading side but
  the reply parser, which has property tests of its own);
* ``ctl(*args)``: run the installed ``caas-socketctl`` as a subprocess with a
  bound, outside the reactor thread, and without any ``CAAS_*`` of ours;
* ``tls_redis``: a ``redis-server`` with a TLS port and a test CA whose
  server certificate names ``localhost`` only.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest
from twisted.internet.threads import deferToThread

from caas_socket.client.resp import INCOMPLETE, ReplyReader, encode_request
from tests.interop.conftest import (  # reused as they are: fixtures and the failure report
    _report_on_failure,  # noqa: F401
    caas_node,  # noqa: F401
    mint,  # noqa: F401
    pytest_runtest_makereport,  # noqa: F401
    secret,  # noqa: F401
    sio,  # noqa: F401
)
from tests.support.redis_server import RedisServer

CTL = Path(sys.executable).parent / "caas-socketctl"
#: No invocation of the CLI may take longer than this (it bounds its own calls by 2 s).
CTL_BOUND = 20.0


class Subscriber:
    """A plain socket subscribed to channels of a Redis, collecting messages."""

    def __init__(self, port: int, *channels: str, host: str = "127.0.0.1") -> None:
        self._sock = socket.create_connection((host, port), timeout=5.0)
        self._reader = ReplyReader()
        self._sock.sendall(encode_request("SUBSCRIBE", *channels))
        for _ in channels:
            kind, *_ = self._next(5.0)
            assert kind == b"subscribe"

    def _next(self, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            reply = self._reader.next_reply()
            if reply is not INCOMPLETE:
                return reply
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no message within {timeout}s")
            self._sock.settimeout(left)
            data = self._sock.recv(65536)
            if not data:
                raise ConnectionError("Redis closed the subscriber")
            self._reader.feed(data)

    def message(self, timeout: float = 5.0) -> tuple[bytes, bytes]:
        """The next ``(channel, payload)``."""
        kind, channel, payload = self._next(timeout)
        assert kind == b"message"
        return channel, payload

    def nothing(self, within: float = 0.3) -> None:
        """Assert that no message arrives for ``within`` seconds."""
        with pytest.raises(TimeoutError):
            self.message(within)

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def subscribe(clean_redis: RedisServer) -> Iterator[Any]:
    """``subscribe("caas:api", ...)`` -> a :class:`Subscriber` on the module's Redis."""
    opened: list[Subscriber] = []

    def open_one(*channels: str) -> Subscriber:
        opened.append(Subscriber(clean_redis.port, *channels))
        return opened[-1]

    yield open_one
    for subscriber in opened:
        subscriber.close()


def snapshot(redis: RedisServer) -> dict[bytes, Any]:
    """Every key and its serialized value: equal snapshots mean nothing was written."""
    keys: Any = redis.command("KEYS", "*")
    return {key: redis.command("DUMP", key) for key in sorted(keys)}


@attrs.frozen
class CtlResult:
    """One run of ``caas-socketctl``."""

    args: tuple[str, ...]
    status: int
    stdout: str
    stderr: str
    seconds: float

    def json(self) -> Any:
        return json.loads(self.stdout)

    def __str__(self) -> str:
        return (
            f"caas-socketctl {' '.join(self.args)} -> {self.status} in {self.seconds:.2f}s\n"
            f"--- stdout ---\n{self.stdout}--- stderr ---\n{self.stderr}"
        )


def run_ctl(*args: str, env: Mapping[str, str] | None = None) -> CtlResult:
    """Run the installed console script, as an operator would, bounded by :data:`CTL_BOUND`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CAAS_")}
    started = time.monotonic()
    done = subprocess.run(
        [str(CTL), *args],
        capture_output=True,
        text=True,
        timeout=CTL_BOUND,
        env={**clean, **(env or {})},
        stdin=subprocess.DEVNULL,
        check=False,
    )
    return CtlResult(args, done.returncode, done.stdout, done.stderr, time.monotonic() - started)


@pytest.fixture
def ctl() -> Any:
    """``await ctl(*args)`` in Twisted tests: the CLI runs in a thread, the reactor goes on."""

    def run(*args: str, env: Mapping[str, str] | None = None) -> Any:
        return deferToThread(run_ctl, *args, env=env)

    return run
