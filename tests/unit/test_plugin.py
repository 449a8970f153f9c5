"""The twistd plugin is discoverable, lazy, and builds an IService from our Options."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from twisted.application.service import IService, IServiceMaker
from twisted.plugin import getPlugins
from twisted.python.usage import UsageError
from zope.interface.verify import verifyObject

from caas_socket.tap import Options


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CAAS_"):
            monkeypatch.delenv(name)


def find_maker() -> IServiceMaker:
    from twisted import plugins

    makers = [m for m in getPlugins(IServiceMaker, plugins) if m.tapname == "caas-socket"]
    assert len(makers) == 1, makers
    return makers[0]


def test_plugin_is_discoverable() -> None:
    maker = find_maker()
    assert verifyObject(IServiceMaker, maker)
    assert maker.options is Options
    assert isinstance(maker.options(), Options)


def test_importing_tap_does_not_touch_the_reactor() -> None:
    """Rule 1: only makeService imports the global reactor, and only when called."""
    code = (
        "import sys, caas_socket.tap, twisted.plugins.caas_socket_plugin\n"
        "assert 'twisted.internet.reactor' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.getcwd())


def test_make_service_turns_config_errors_into_usage_errors(monkeypatch) -> None:
    maker = find_maker()
    options = maker.options()
    options.parseOptions(["--auth=none"])
    monkeypatch.setenv("CAAS_MAX_PAYLOAD", "lots")
    with pytest.raises(UsageError, match=r"--max-payload \(from CAAS_MAX_PAYLOAD\)"):
        maker.makeService(options)


def test_make_service_returns_an_iservice() -> None:
    """Needs caas_socket.service.build_service (written separately)."""
    maker = find_maker()
    options = maker.options()
    options.parseOptions(["--auth=none", "--listen=tcp:0:interface=127.0.0.1"])
    service = maker.makeService(options)
    assert IService.providedBy(service)
