"""Weight limiting (429 → 418) and the accelerated clock, with time injected."""

from __future__ import annotations

import pytest

from sim.clock import SimClock
from sim.limits import BANNED, LIMITED, OK, WeightLimiter, klines_weight


@pytest.mark.parametrize(
    ("limit", "weight"),
    [(1, 1), (99, 1), (100, 2), (499, 2), (500, 5), (1000, 5), (1001, 10), (1500, 10)],
)
def test_klines_weight_follows_the_documented_table(limit: int, weight: int) -> None:
    assert klines_weight(limit) == weight


def test_limit_then_429_then_ban_then_recovery() -> None:
    lim = WeightLimiter(limit=20, window_s=60.0, ban_after=2, ban_s=120.0)
    t = 600.0  # start of a window
    for used in (10, 20):
        d = lim.admit("ip", 10, t)
        assert (d.outcome, d.used_weight) == (OK, used)
    d = lim.admit("ip", 1, t + 15)
    assert d.outcome == LIMITED and d.retry_after_s == 45 and d.used_weight == 20
    assert lim.admit("ip", 1, t + 16).outcome == LIMITED
    assert lim.admit("ip", 1, t + 17).outcome == LIMITED
    banned = lim.admit("ip", 1, t + 18)
    assert banned.outcome == BANNED and banned.retry_after_s == 120
    # Still banned in the next window, until the ban ends.
    assert lim.admit("ip", 1, t + 61).outcome == BANNED
    assert lim.admit("ip", 1, t + 18 + 120).outcome == OK


def test_windows_reset_and_clients_are_separate() -> None:
    lim = WeightLimiter(limit=10, window_s=60.0, ban_after=5, ban_s=120.0)
    assert lim.admit("a", 10, 0.0).outcome == OK
    assert lim.admit("a", 1, 1.0).outcome == LIMITED
    assert lim.admit("b", 10, 1.0).outcome == OK
    assert lim.admit("a", 10, 60.0).outcome == OK
    assert lim.used("a", 60.5) == 10 and lim.used("a", 120.0) == 0


class FakeMonotonic:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_clock_runs_at_speed_and_rebases_on_speed_change() -> None:
    wall = FakeMonotonic()
    clock = SimClock(1_000_000, speed=60.0, monotonic=wall)
    assert clock.now_ms() == 1_000_000
    wall.t += 2.0
    assert clock.now_ms() == 1_000_000 + 120_000
    clock.set_speed(1.0)
    assert clock.now_ms() == 1_120_000  # no jump on a speed change
    wall.t += 1.5
    assert clock.now_ms() == 1_121_500
    assert clock.advance(10_000) == 1_131_500
    assert clock.wall_seconds_until(1_131_500 + 3000) == pytest.approx(3.0)


def test_clock_refuses_to_go_back_or_stop() -> None:
    clock = SimClock(0, speed=1.0, monotonic=FakeMonotonic())
    with pytest.raises(ValueError, match="forward"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="speed"):
        clock.set_speed(0)
