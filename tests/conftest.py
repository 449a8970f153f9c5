"""Shared pytest fixtures.

Redis: one real ``redis-server`` per test module (``redis_server``), emptied
before each test that asks for ``clean_redis``.  A missing ``redis-server`` is
a failure, not a skip: the Redis backend must never go untested by accident.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.redis_server import RedisServer


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
