"""Shared pytest fixtures.

Redis: one real ``redis-server`` per test module (``redis_server``), emptied
before each test that asks for ``clean_redis``; ``tls_redis`` has a TLS port.
A missing ``redis-server`` is a failure, not a skip: the Redis backend must
never go untested by accident.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.redis_server import RedisServer
from tests.support.redis_tls import tls_redis_server


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A ``redis-server`` on a free 127.0.0.1 port for this module; killed at teardown."""
    try:
        server = RedisServer()
        server.start()
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def clean_redis(redis_server: RedisServer) -> RedisServer:
    """The module's server, running, not paused and empty (FLUSHALL)."""
    if redis_server.paused:
        redis_server.resume()
    redis_server.start()  # a no-op unless an earlier test stopped it
    redis_server.command("FLUSHALL")
    redis_server.command("SCRIPT", "FLUSH")
    return redis_server


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, int, Path]]:
    """``(server, tls_port, ca_file)``: a redis-server with a TLS port for ``localhost``."""
    with tls_redis_server(tmp_path_factory.mktemp("tls")) as running:
        yield running
