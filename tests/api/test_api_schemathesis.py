"""Schemathesis against a real node: requests generated from openapi.json, valid and not.

Every generated request must get a documented status with a body of the
documented schema, invalid ones a 4xx, and none a 5xx.  The node runs in this
process on a real Redis; the ``st`` CLI runs in a subprocess (off the reactor
thread, so the node keeps answering), bounded in examples and time, with a
fixed seed so a failure reproduces.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.api.client import FULL_KEY
from tests.api.inprocess import ApiCluster

ST = Path(sys.executable).parent / "st"
EXAMPLES = 30
SEED = 20240611
BOUND = 240.0


@pytest_twisted.ensureDeferred
async def test_generated_requests_get_documented_answers_and_no_5xx(
    api_cluster: ApiCluster, tmp_path: Path
) -> None:
    if not ST.exists():
        pytest.fail(f"{ST} is missing: pip install schemathesis into the venv", pytrace=False)
    # A high room limit: valid joins must not turn into 409s as the examples pile up.
    (node,) = await api_cluster.start("n1", max_rooms_per_user=1_000_000)
    argv = [
        str(ST),
        "run",
        f"{node.api.base}/openapi.json",
        "--header",
        f"Authorization: Bearer {FULL_KEY}",
        "--checks",
        "all",
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        str(SEED),
        "--request-timeout",
        "5",
        "--no-color",
    ]

    def run() -> subprocess.CompletedProcess[str]:
        # subprocess.run kills the child (by its PID) when the bound passes.
        return subprocess.run(
            argv, cwd=tmp_path, capture_output=True, text=True, timeout=BOUND, check=False
        )

    result = await deferToThread(run)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output.replace(FULL_KEY, "<key>")
    assert "No issues found" in output
