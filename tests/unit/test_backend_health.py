"""One outage, one error line: BackendHealth's episodes, recoveries and relapses."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from caas_socket.redis_connection import RedisUnavailable
from caas_socket.registry.health import RELAPSE_WINDOW, BackendHealth

DOWN = RedisUnavailable("Redis did not answer GET within 0.5s: no connection")


def events(captured: list[dict]) -> list[tuple[str, str]]:
    return [(e["log_level"].name, e["event"]) for e in captured if "event" in e]


def test_an_outage_is_logged_when_it_starts_and_when_it_ends() -> None:
    clock = Clock()
    health = BackendHealth(clock)
    with capturedLogs() as captured:
        for _ in range(50):
            health.failed("publish", DOWN)
            clock.advance(0.1)
        health.succeeded()
        health.succeeded()
    assert events(captured) == [("error", "backend_down"), ("info", "backend_up")]
    assert health.available and health.dirty and health.episodes == 1
    assert "after 5.0s (50 failed calls)" in captured[-1]["log_format"].format(**captured[-1])


def test_a_failure_soon_after_recovery_continues_the_same_outage() -> None:
    """The bus publisher reconnects after the registry pool: not a second outage."""
    clock = Clock()
    health = BackendHealth(clock)
    with capturedLogs() as captured:
        health.failed("register", DOWN)
        clock.advance(2.0)
        health.succeeded()
        clock.advance(RELAPSE_WINDOW / 2)
        health.failed("publish to user nodes", DOWN)
        assert not health.available  # callers still fail open meanwhile
        clock.advance(0.5)
        health.succeeded()
    assert events(captured) == [
        ("error", "backend_down"),
        ("info", "backend_up"),
        ("warn", "backend_relapse"),
        ("info", "backend_up"),
    ]
    assert health.episodes == 1


def test_a_failure_long_after_recovery_is_a_new_outage() -> None:
    clock = Clock()
    health = BackendHealth(clock)
    with capturedLogs() as captured:
        health.failed("register", DOWN)
        health.succeeded()
        clock.advance(RELAPSE_WINDOW + 1)
        health.failed("register", DOWN)
    assert [e for _, e in events(captured)].count("backend_down") == 2
    assert health.episodes == 2


def test_the_first_failure_after_start_is_an_outage_not_a_relapse() -> None:
    clock = Clock()
    health = BackendHealth(clock)
    with capturedLogs() as captured:
        health.failed("acquire lease", DOWN)
    assert events(captured) == [("error", "backend_down")]
