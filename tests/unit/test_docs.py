"""The README stays true: every option documented, the two commands as CI runs them."""

from __future__ import annotations

from pathlib import Path

import docutils.core
import docutils.nodes
import pytest

from caas_socket.config import OPTIONS

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.rst").read_text()


@pytest.mark.parametrize("name", [opt.name for opt in OPTIONS if opt.name != "config"])
def test_every_option_is_in_the_readme(name: str) -> None:
    assert f"``--{name}" in README


def test_ci_runs_the_readme_test_command() -> None:
    assert "    make test\n" in README and "    make run\n" in README
    assert "make test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize(
    "doc", ["README.rst", "docs/BUS.rst", "docs/REDIS.rst", "docs/DEPLOY.rst", "docs/API.rst"]
)
def test_docs_are_valid_restructuredtext(doc: str) -> None:
    tree = docutils.core.publish_doctree(
        (ROOT / doc).read_text(),
        settings_overrides={"report_level": 5, "halt_level": 5, "warning_stream": False},
    )
    problems = [m.astext() for m in tree.findall(docutils.nodes.system_message) if m["level"] >= 2]
    assert problems == []
