"""The timer wheel: never early, at most one tick late, O(1) cancel, one DelayedCall."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from caas_socket.timers import TimerWheel


def test_fires_at_the_tick_after_the_deadline_never_before() -> None:
    clock = Clock()
    wheel = TimerWheel(clock, 0.1)
    fired: list[float] = []
    wheel.call_later(0.25, lambda: fired.append(clock.seconds()))
    clock.advance(0.2)
    assert fired == []
    clock.advance(0.1)
    assert fired == [pytest.approx(0.3)]


def test_cancelled_timers_do_not_fire_and_many_share_one_delayed_call() -> None:
    clock = Clock()
    wheel = TimerWheel(clock, 0.05)
    fired: list[int] = []
    timers = [wheel.call_later(1.0, fired.append, i) for i in range(1000)]
    assert len(clock.getDelayedCalls()) == 1
    for t in timers[::2]:
        t.cancel()
    clock.advance(1.0)
    assert fired == list(range(1, 1000, 2))
    assert clock.getDelayedCalls() == []


def test_earlier_timer_rearms_the_wakeup_and_order_is_kept() -> None:
    clock = Clock()
    wheel = TimerWheel(clock, 0.05)
    fired: list[str] = []
    wheel.call_later(10, fired.append, "late")
    wheel.call_later(1, fired.append, "early")
    clock.advance(1)
    assert fired == ["early"]
    clock.advance(9)
    assert fired == ["early", "late"]


def test_a_failing_callback_does_not_stop_the_others() -> None:
    clock = Clock()
    wheel = TimerWheel(clock, 0.05)
    fired: list[int] = []

    def boom() -> None:
        raise RuntimeError("boom")

    wheel.call_later(1, boom)
    wheel.call_later(1, fired.append, 1)
    clock.advance(1)
    assert fired == [1]


def test_callbacks_may_schedule_more_timers() -> None:
    clock = Clock()
    wheel = TimerWheel(clock, 0.05)
    fired: list[float] = []

    def again() -> None:
        fired.append(clock.seconds())
        if len(fired) < 3:
            wheel.call_later(0.5, again)

    wheel.call_later(0.5, again)
    clock.pump([0.5] * 4)
    assert len(fired) == 3


def test_stop_drops_everything() -> None:
    clock = Clock()
    wheel = TimerWheel(clock, 0.05)
    fired: list[int] = []
    wheel.call_later(1, fired.append, 1)
    wheel.stop()
    clock.advance(2)
    assert fired == [] and len(wheel) == 0 and clock.getDelayedCalls() == []
