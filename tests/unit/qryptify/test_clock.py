"""ExchangeClock: local monotonic time plus the measured offset (invariant 5)."""

from __future__ import annotations

import time

import pytest

from qryptify.clock import ExchangeClock


def test_a_wall_clock_step_does_not_move_the_exchange_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = ExchangeClock()
    local = clock.local_ms()
    clock.observe(local, local, 1_700_000_000_000)
    before = clock.now_ms()
    real = time.time_ns
    # The wall clock jumps a day ahead (NTP step, an operator): "now" must not follow it.
    monkeypatch.setattr(time, "time_ns", lambda: real() + 86_400_000 * 1_000_000)
    after = clock.now_ms()
    assert 0 <= after - before < 60_000


def test_readings_never_go_backwards_when_a_new_offset_is_lower() -> None:
    clock = ExchangeClock()
    local = clock.local_ms()
    clock.observe(local, local, 1_700_000_000_000)
    first = clock.now_ms()
    clock.observe(local, local, 1_600_000_000_000)
    assert clock.now_ms() >= first
