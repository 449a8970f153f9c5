"""Engine.IO v4 / Socket.IO v5 conformance of examples/conformance_server.py, frame by frame.

``conformance.mjs`` (raw frames over the ``ws`` package) runs every check
concurrently against the example server started as a process; each check is
reported here as its own test.  The server is built only with the public API,
so this is what an application gets from ``caas_socket.server``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.nodes import ConformanceServer
from tests.support.sio_driver import INSTALL_HINT, NODE_MODULES

SCRIPT = Path(__file__).with_name("conformance.mjs")

CHECKS = [
    # Engine.IO
    "eio-open-packet",
    "eio-invalid-eio",
    "eio-invalid-transport",
    "eio-polling-request-refused",
    "eio-heartbeat",
    "eio-ping-timeout",
    "eio-client-close",
    "eio-client-ping-closes",
    "eio-connect-timeout",
    # Socket.IO: connect
    "sio-connect-main",
    "sio-connect-main-with-payload",
    "sio-connect-custom",
    "sio-connect-custom-without-comma",
    "sio-connect-custom-with-payload",
    "sio-unknown-namespace",
    "sio-invalid-connect-packet",
    # Socket.IO: disconnect
    "sio-disconnect-main",
    "sio-disconnect-custom",
    # Socket.IO: messages
    "sio-event-plain-text",
    "sio-event-custom-namespace",
    "sio-event-binary",
    "sio-ack-plain-text",
    "sio-ack-binary",
    # Socket.IO: malformed packets
    "sio-malformed-unknown-type",
    "sio-malformed-packet-type-digit",
    "sio-malformed-payload",
    "sio-malformed-ack-id",
    "sio-malformed-placeholder",
    "sio-malformed-null-connect-payload",
]


@pytest.fixture(scope="module")
def results(conformance_server: ConformanceServer) -> dict[str, Any]:
    """Run every check once (they take ~1 s together) and index the results by name."""
    if not (NODE_MODULES / "ws").is_dir():
        pytest.fail(f"{NODE_MODULES} has no ws; {INSTALL_HINT}")
    node = shutil.which("node")
    assert node, "node is not on PATH"
    url = f"http://{conformance_server.host}:{conformance_server.port}"
    run = subprocess.run(
        [node, str(SCRIPT), url],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]
    summary = [line for line in lines if line.get("done")]
    assert summary, f"conformance.mjs did not finish (rc {run.returncode}):\n{run.stderr}"
    return {line["check"]: line for line in lines if "check" in line}


@pytest.mark.parametrize("check", CHECKS)
def test_conformance(results: dict[str, Any], conformance_server: ConformanceServer, check: str):
    result = results.get(check)
    assert result is not None, f"conformance.mjs has no check {check!r}"
    assert result["ok"], f"{check}: {result['error']}\n--- server ---\n{conformance_server.log}"


def test_every_check_is_reported(results: dict[str, Any]):
    """A check added to conformance.mjs must be listed here, so it shows up as a test."""
    assert sorted(results) == sorted(CHECKS)
