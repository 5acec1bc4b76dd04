"""services.producer.clock: the exchange clock follows an accelerated exchange's rate."""

from __future__ import annotations

from qryptify.clock import FixedClock
from services.producer.clock import StreamClock

T = 1_700_000_000_000


def test_real_exchange_rate_snaps_to_one() -> None:
    local = FixedClock(1_000)
    clock = StreamClock(local)
    clock.observe(1_000, 1_010, T)
    local.set(61_000)
    clock.observe(61_000, 61_010, T + 60_300)  # 0.5 % apart: noise
    assert clock.rate == 1.0
    local.set(62_005)
    assert clock.now_ms() == T + 60_300 + 1_000


def test_short_baselines_do_not_set_the_rate() -> None:
    local = FixedClock(0)
    clock = StreamClock(local)
    clock.observe(0, 10, T)
    clock.observe(100, 102, T + 300)  # 100 ms apart with jitter: too short to judge
    assert clock.rate == 1.0


def test_accelerated_exchange_is_followed() -> None:
    local = FixedClock(0)
    clock = StreamClock(local)
    clock.observe(0, 2, T)
    local.set(1_000)
    clock.observe(1_000, 1_002, T + 3_600_000)  # speed 3600
    assert abs(clock.rate - 3600) < 1
    local.set(1_101)
    assert abs(clock.now_ms() - (T + 3_600_000 + 360_000)) < 2_000
    assert clock.uncertainty_ms >= 3600


def test_speed_change_is_followed_within_a_baseline() -> None:
    local = FixedClock(0)
    clock = StreamClock(local)
    server = T
    for step in range(1, 6):  # speed 3600, a sync every 0.5 s
        local.set(step * 500)
        server += 500 * 3600
        clock.observe(step * 500, step * 500, server)
    for step in range(6, 10):  # now speed 600
        local.set(step * 500)
        server += 500 * 600
        clock.observe(step * 500, step * 500, server)
    assert abs(clock.rate - 600) < 1


def test_the_newest_event_time_anchors_the_estimate() -> None:
    local = FixedClock(0)
    clock = StreamClock(local)
    clock.observe(0, 0, T)
    local.set(1_000)
    clock.observe(1_000, 1_000, T + 3_600_000)  # rate 3600
    local.set(1_100)
    clock.observe_event(T + 3_700_000)  # the stream says a little less than 3600 × 0.1 s
    local.set(1_110)
    assert clock.now_ms() == T + 3_700_000 + 36_000


def test_readings_never_go_backwards_and_bogus_events_are_ignored() -> None:
    local = FixedClock(0)
    clock = StreamClock(local)
    clock.observe(0, 0, T)
    clock.observe_event(T + 5_000)
    assert clock.now_ms() == T + 5_000
    clock.observe_event(T + 1_000)
    assert clock.now_ms() == T + 5_000
    clock.observe_event(T + 10**9)  # absurdly far ahead: ignored
    assert clock.now_ms() == T + 5_000
    local.set(10)
    clock.observe(10, 10, T - 10_000)  # a lower measurement does not turn time back
    assert clock.now_ms() == T + 5_000
