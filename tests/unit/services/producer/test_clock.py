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
    clock.observe(61_000, 61_010, T + 60_300)  # 0.5 % drift: noise
    assert clock.rate == 1.0
    local.set(62_005)
    assert clock.now_ms() == T + 60_300 + 1_000


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


def test_event_times_move_it_forward_but_never_backwards() -> None:
    local = FixedClock(0)
    clock = StreamClock(local)
    clock.observe(0, 0, T)
    clock.observe_event(T + 5_000)
    assert clock.now_ms() == T + 5_000
    clock.observe_event(T + 1_000)
    assert clock.now_ms() == T + 5_000
    clock.observe_event(T + 10**9)  # absurdly far ahead: ignored
    assert clock.now_ms() == T + 5_000
    clock.observe(0, 0, T - 10_000)  # a lower measurement does not turn time back
    assert clock.now_ms() == T + 5_000
