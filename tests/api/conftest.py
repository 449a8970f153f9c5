"""Fixtures of the HTTP API tests: a site over fake operations, and real nodes.

* ``api``: :func:`build_api_site` over :class:`FakeOperations` on a free port
  of 127.0.0.1, with the keys of :data:`KEYS_TEXT` and a 1 KiB body limit;
  ``api.client`` calls it, ``api.ops`` records what it was asked to do.
* ``api_cluster``: caas-socket nodes *in this process*, on the test's reactor,
  sharing the module's real ``redis-server``, each with the API on its own
  port (as ``--api-listen tcp:0`` will give), and the official
  socket.io-client (``sio``) to connect to them.  Nodes stop at teardown.

The client is :class:`tests.api.client.ApiClient` (every call bounded by
``TIMEOUT``); the nodes are :mod:`tests.api.inprocess`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from caas_socket.api import ApiKeys, build_api_site, load_openapi
from tests.api.client import KEYS_TEXT, ApiClient
from tests.api.fakes import FakeOperations, LocalApi
from tests.api.inprocess import ApiCluster
from tests.interop.conftest import (  # reused as they are: the client driver and tokens
    mint,  # noqa: F401
    pytest_runtest_makereport,  # noqa: F401
    sio,  # noqa: F401
)
from tests.support.redis_server import RedisServer


@pytest.fixture
def api() -> Iterator[LocalApi]:
    """The API over :class:`FakeOperations`, 1 KiB body limit, on a free port."""
    ops = FakeOperations()
    keys = ApiKeys.parse(KEYS_TEXT)
    openapi = load_openapi()
    site = build_api_site(cast(Any, ops), keys, reactor=reactor, max_body=1024, openapi=openapi)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    client = ApiClient(f"http://127.0.0.1:{port.getHost().port}")
    yield LocalApi(ops, client, port)
    pytest_twisted.blockon(Deferred.fromCoroutine(client.close()))
    pytest_twisted.blockon(port.stopListening())


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "api-keys"
    path.write_text(KEYS_TEXT)
    path.chmod(0o600)
    return path


@pytest.fixture
def api_cluster(
    clean_redis: RedisServer,
    sio: Any,  # noqa: F811
    mint: Any,  # noqa: F811
    keys_file: Path,
) -> Iterator[ApiCluster]:
    """In-process nodes on an empty Redis, and the socket.io-client driver; all stopped after."""
    cluster = ApiCluster(clean_redis, sio, mint, keys_file)
    yield cluster
    if clean_redis.paused:
        clean_redis.resume()
    pytest_twisted.blockon(Deferred.fromCoroutine(cluster.stop()))
