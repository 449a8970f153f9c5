"""docs/API.rst stays true: valid reST, every rule of app/commands.py named, examples valid."""

from __future__ import annotations

import json
import re
from pathlib import Path

import docutils.core
import docutils.nodes
import pytest

from caas_socket.app.commands import OPS, decode_command

DOC = (Path(__file__).resolve().parents[2] / "docs" / "API.rst").read_text()


def test_is_valid_restructuredtext() -> None:
    tree = docutils.core.publish_doctree(
        DOC, settings_overrides={"report_level": 5, "halt_level": 5, "warning_stream": False}
    )
    problems = [m.astext() for m in tree.findall(docutils.nodes.system_message) if m["level"] >= 2]
    assert problems == []


@pytest.mark.parametrize(
    "name",
    [
        *(f"``{op}``" for op in OPS),
        *(
            f"``{key}``"
            for key in (
                "v",
                "op",
                "tenantId",
                "userId",
                "deviceId",
                "room",
                "event",
                "data",
                "rooms",
                "reason",
                "reconnect",
            )
        ),
        *(
            f"``{code}``"
            for code in (
                "invalid_json",
                "invalid_command",
                "unsupported_version",
                "invalid_op",
                "missing_field",
                "invalid_field",
                "invalid_target",
            )
        ),
        "``{prefix}api``",
        "``caas:kicked``",
        "io server disconnect",
        "/openapi.json",
        "--max-rooms-per-user",
    ],
)
def test_names_every_op_field_and_code(name: str) -> None:
    assert name in DOC


def test_every_example_command_is_one_the_nodes_accept() -> None:
    examples = re.findall(r"^\s*(\{\"v\":1,.*\})\s*$", DOC, re.MULTILINE)
    examples += re.findall(r"PUBLISH caas:api '(\{.*\})'", DOC)
    assert len(examples) >= 12
    ops = set()
    for example in examples:
        ops.add(decode_command(example.encode()).op)
        json.loads(example)
    assert ops == set(OPS)
