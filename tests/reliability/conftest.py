"""Fixtures of the reliability suite: real nodes (JSON logs), Redis, the official client.

Reused as they are: ``Cluster`` of ``tests/cluster`` (nodes behind the
balancer, the registry read from Redis), ``sio``/``mint``/``secret`` of
``tests/interop``, ``redis_server``/``clean_redis`` of ``tests/conftest.py``.
What this adds:

* ``nodes``: a :class:`~tests.reliability.harness.NodeGroup`; every node it
  started is stopped by PID at teardown, all at once.
* ``cluster``: the cluster tests' :class:`Cluster` over those nodes.
* At the end of the run, every ``FIGURE:`` line again, and the JSON file
  ``$CAAS_RELIABILITY_FIGURES`` when that is set.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from tests.cluster.conftest import Cluster
from tests.interop.conftest import (  # reused as they are: the client driver and tokens
    _FAILED,
    mint,  # noqa: F401
    pytest_runtest_makereport,  # noqa: F401
    secret,  # noqa: F401
    sio,  # noqa: F401
)
from tests.reliability import figures
from tests.reliability.harness import NodeGroup
from tests.support.nodes import ServerProcess
from tests.support.redis_server import RedisServer
from tests.support.sio_driver import SioDriver

#: Lines of each server's output shown when a test fails.
TAIL = 150


@pytest.fixture(autouse=True)
def _tail_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """On failure, the last lines each server logged during the test (logs here are long)."""
    marks = {p: p.mark() for p in list(ServerProcess.live)}
    yield
    if not request.node.stash.get(_FAILED, False):
        return
    for process in list(ServerProcess.live):
        lines = process.lines[marks.get(process, 0) :]
        print(
            f"\n===== {process.name} pid {process.pid} port {process.port}: last {TAIL} lines ====="
        )
        print("\n".join(lines[-TAIL:]))


@pytest.fixture
def nodes() -> Iterator[NodeGroup]:
    """Start nodes with ``nodes.start(*args)``; all are stopped by PID at teardown."""
    group = NodeGroup()
    yield group
    group.stop_all()


@pytest.fixture
def cluster(
    clean_redis: RedisServer,
    nodes: NodeGroup,
    sio: SioDriver,  # noqa: F811
    mint: Callable[..., str],  # noqa: F811
    secret: str,  # noqa: F811
) -> Iterator[Cluster]:
    """A cluster on an empty Redis; the clients leave first, then the balancer, then the nodes."""
    built = Cluster(nodes.start, clean_redis, sio, mint, secret)
    yield built
    pytest_twisted.blockon(Deferred.fromCoroutine(built.balancer.stop()))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not figures.FIGURES:
        return
    terminalreporter.section("reliability figures")
    for entry in figures.FIGURES:
        terminalreporter.write_line(figures.line(entry))
    path = os.environ.get("CAAS_RELIABILITY_FIGURES")
    if path:
        figures.write_json(path, figures.FIGURES, command="pytest tests/reliability")
        terminalreporter.write_line(f"figures written to {path}")
