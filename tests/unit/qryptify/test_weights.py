"""WeightBudget: pure, time injected."""

from __future__ import annotations

import pytest

from qryptify.binance.weights import (
    DEFAULT_BAN_MS,
    WeightBudget,
    best_page_limit,
    klines_weight,
)

W0 = 1_704_067_200_000  # a window boundary (minute-aligned)


@pytest.mark.parametrize(
    ("limit", "weight"),
    [(1, 1), (99, 1), (100, 2), (499, 2), (500, 5), (1000, 5), (1001, 10), (1500, 10)],
)
def test_klines_weight_by_limit(limit: int, weight: int) -> None:
    assert klines_weight(limit) == weight


@pytest.mark.parametrize("limit", [0, 1501, -5])
def test_klines_weight_rejects_out_of_range(limit: int) -> None:
    with pytest.raises(ValueError, match="1..1500"):
        klines_weight(limit)


def test_best_page_limit_is_most_candles_per_weight() -> None:
    assert best_page_limit() == 499
    assert best_page_limit(1000) == 1000
    with pytest.raises(ValueError):
        best_page_limit(2000)


def test_reserve_until_usable_then_wait_until_sends_age_out() -> None:
    b = WeightBudget(limit=100, safety_margin=0.1, guard_ms=0)  # usable 90
    assert b.usable == 90
    for i in range(45):
        assert b.reserve(2, W0 + i * 100) == 0  # sends at W0 .. W0+4.4 s
    assert b.pending == 90 and b.used(W0 + 5_000) == 90
    # the oldest send (W0) leaves the 60 s window at W0 + 60 s
    assert b.reserve(2, W0 + 5_000) == 55_001
    assert b.reserve(2, W0 + 60_001) == 0
    # in-flight weight is counted like sent weight; answers do not free it
    for _ in range(45):
        b.after_response(None, W0 + 60_010, weight=2, sent_ms=W0)
    assert b.pending == 2


def test_any_window_of_any_phase_holds_at_most_the_usable_weight() -> None:
    """The server's window phase is unknown: a sliding window is safe for every phase."""
    b = WeightBudget(limit=2400, safety_margin=0.02)
    sends: list[int] = []
    now = W0 + 17_123  # arbitrary start
    while now < W0 + 8 * 60_000:
        wait = b.reserve(2, now)
        if wait:
            now += wait
            continue
        sends.append(now)
        b.after_response(None, now + 15, weight=2, sent_ms=now)
        now += 3
    for phase in range(0, 60_000, 997):
        per_window: dict[int, int] = {}
        for t in sends:
            per_window[(t - phase) // 60_000] = per_window.get((t - phase) // 60_000, 0) + 2
        assert max(per_window.values()) <= b.usable


def test_header_above_our_count_is_adopted_as_foreign_weight() -> None:
    b = WeightBudget(limit=100, safety_margin=0.0)
    now = W0 + 5_000
    assert b.reserve(2, now) == 0
    # another client on the same IP (or our previous run) used 80 already
    b.after_response(82, now + 5, weight=2, sent_ms=now)
    assert b.used(now + 5) == 82 and b.foreign(now + 5) == 80
    for _ in range(9):
        assert b.reserve(2, now + 6) == 0
    wait = b.reserve(2, now + 6)
    assert wait > 0
    # the foreign weight ages out one window after it was measured
    assert b.foreign(now + 60_000 + b.guard_ms) == 0


def test_stale_lower_header_does_not_lower_the_count() -> None:
    b = WeightBudget(limit=100, safety_margin=0.0)
    now = W0 + 5_000
    for i in range(3):
        b.reserve(2, now + i)
    b.after_response(6, now + 10, weight=2, sent_ms=now + 2)
    b.after_response(2, now + 11, weight=2, sent_ms=now)  # arrived out of order: ignored
    assert b.used(now + 11) == 6
    assert b.foreign(now + 11) == 0


def test_header_not_above_our_count_clears_foreign_weight() -> None:
    b = WeightBudget(limit=100, safety_margin=0.0)
    b.reserve(2, W0)
    b.after_response(50, W0 + 5, weight=2, sent_ms=W0)
    assert b.foreign(W0 + 5) == 48
    b.reserve(2, W0 + 10)
    b.after_response(4, W0 + 15, weight=2, sent_ms=W0 + 10)  # the server's window rolled
    assert b.foreign(W0 + 15) == 0
    assert b.used(W0 + 15) == 4


def test_429_pauses_everything_for_retry_after() -> None:
    b = WeightBudget(limit=2400)
    now = W0 + 10_000
    assert b.reserve(2, now) == 0
    b.after_response(2, now, weight=2, sent_ms=now)
    until = b.on_429(7, now)
    assert until == now + 7_000
    assert b.reserve(1, now + 1) == 6_999
    assert b.reserve(1, now + 6_999) == 1
    assert b.reserve(1, now + 7_000) == 0
    assert b.stats.rate_limited == 1


def test_429_without_retry_after_waits_one_window() -> None:
    b = WeightBudget(limit=2400)
    until = b.on_429(None, W0 + 42_000)
    assert until == W0 + 102_000
    assert b.reserve(1, W0 + 42_001) == 59_999


def test_418_is_a_global_stop_until_its_time() -> None:
    b = WeightBudget(limit=2400)
    now = W0 + 1_000
    assert b.on_418(now, retry_after_s=300) == now + 300_000
    assert b.is_banned(now + 299_999)
    assert b.reserve(1, now + 100_000) == 200_000
    assert b.reserve(1, now + 300_000) == 0
    # the end from the message is used without Retry-After; without either, the minimum ban
    b2 = WeightBudget()
    assert b2.on_418(now, until_ms=now + 5_000) == now + 5_000
    b3 = WeightBudget()
    assert b3.on_418(now) == now + DEFAULT_BAN_MS


def test_shorter_later_pause_does_not_cut_a_ban() -> None:
    b = WeightBudget()
    b.on_418(W0, retry_after_s=120)
    b.on_429(1, W0 + 1)
    assert b.blocked_until() == W0 + 120_000


def test_release_keeps_the_weight_counted() -> None:
    """A timed-out request may have been counted by the server: its weight stays."""
    b = WeightBudget(limit=10, safety_margin=0.0)
    assert b.reserve(10, W0) == 0
    b.release(10)
    assert b.pending == 0
    assert b.reserve(1, W0) > 0


def test_empty_window_admits_one_request_even_when_weight_exceeds_usable() -> None:
    b = WeightBudget(limit=10, safety_margin=0.3)  # usable 7
    assert b.reserve(10, W0) == 0
    with pytest.raises(ValueError):
        b.reserve(11, W0)


def test_set_limit_from_exchange_info() -> None:
    b = WeightBudget(limit=2400, safety_margin=0.02)
    b.set_limit(1200)
    assert b.usable == 1176
    with pytest.raises(ValueError):
        b.set_limit(0)


def test_steady_state_uses_at_least_95_percent_of_the_limit() -> None:
    """A saturating client fills >= 95 % of the limit per minute on average, never more.

    The simulated server counts fixed windows at its own phase and answers with the header.
    """
    b = WeightBudget(limit=2400, safety_margin=0.02)
    phase = 23_456
    now = W0
    per_window: dict[int, int] = {}
    while now < W0 + 10 * 60_000:
        wait = b.reserve(2, now)
        if wait:
            now += wait
            continue
        window = (now - phase) // 60_000
        per_window[window] = per_window.get(window, 0) + 2
        b.after_response(per_window[window], now + 20, weight=2, sent_ms=now)
        now += 20
    assert max(per_window.values()) <= 2400
    assert b.stats.foreign_adopted == 0
    assert b.stats.weight_sent >= 0.95 * 2400 * 10


def test_small_foreign_weight_does_not_stall_a_full_window() -> None:
    """Our sends age out one by one; a little foreign weight must not make us wait for all
    of it to expire at once (late arrivals at the server look like foreign weight)."""
    b = WeightBudget(limit=100, safety_margin=0.0, guard_ms=0)
    for i in range(48):
        assert b.reserve(2, W0 + i * 200) == 0  # one send every 200 ms, up to W0 + 9.4 s
        b.after_response(None, W0 + i * 200 + 5, weight=2, sent_ms=W0 + i * 200)
    # a response whose header counts 8 more than we sent in the window
    b.after_response(104, W0 + 9_500, weight=0, sent_ms=W0 + 9_400)
    assert b.foreign(W0 + 9_500) == 8 and b.used(W0 + 10_000) == 104
    wait = b.reserve(2, W0 + 10_000)
    # 6 weight must leave: our first three sends (W0, W0+200, W0+400) age out at W0+60.4 s,
    # before the foreign measurement expires (W0 + 69.4 s)
    assert wait == 60_401 - 10_000
    assert b.reserve(2, W0 + 10_000 + wait) == 0
