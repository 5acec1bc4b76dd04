"""services.producer.watchdog and rotation: overdue pairs, silent connections, 24 h rotation."""

from __future__ import annotations

import pytest

from qryptify.pairs import HOUR_MS, MINUTE_MS, Pair
from services.producer.rotation import Handover, RotationPolicy
from services.producer.stream import LiveBook
from services.producer.watchdog import Watchdog, pairs_needing_fill, stale_connections
from tests.conftest import T0, make_kline

BTC = Pair("BTCUSDT", "1m")
ETH = Pair("ETHUSDT", "1h")
M = MINUTE_MS


def book() -> LiveBook:
    return LiveBook({BTC: T0, ETH: T0 - HOUR_MS})


def test_pair_is_overdue_only_after_close_plus_grace() -> None:
    dog = Watchdog(grace_ms=5_000, retry_ms=2_000)
    b = book()
    close = T0 + 2 * M - 1  # the candle at T0+1m
    assert dog.overdue(b, close + 5_000) == []
    assert dog.overdue(b, close + 5_001) == [BTC]


def test_arrived_candle_is_not_overdue() -> None:
    dog = Watchdog(grace_ms=5_000, retry_ms=2_000)
    b = book()
    b.offer(make_kline("BTCUSDT", "1m", T0 + M))
    assert dog.overdue(b, T0 + 2 * M + 10_000) == []
    # the next one becomes overdue in its turn
    assert dog.overdue(b, T0 + 3 * M + 10_000) == [BTC]


def test_skipped_frame_in_the_middle_is_found() -> None:
    dog = Watchdog(grace_ms=1_000, retry_ms=2_000)
    b = book()
    b.offer(make_kline("BTCUSDT", "1m", T0 + M))
    b.offer(make_kline("BTCUSDT", "1m", T0 + 3 * M))  # T0+2m's x:true was skipped
    assert dog.overdue(b, T0 + 3 * M + 1_001) == [BTC]


def test_busy_pairs_and_retry_spacing() -> None:
    dog = Watchdog(grace_ms=0, retry_ms=10_000)
    b = book()
    now = T0 + 5 * M
    assert dog.overdue(b, now, busy={BTC}) == []
    assert dog.overdue(b, now) == [BTC]
    dog.fetched(BTC, now)
    assert dog.overdue(b, now + 9_999) == []
    assert dog.overdue(b, now + 10_000) == [BTC]


def test_each_pair_uses_its_own_interval() -> None:
    dog = Watchdog(grace_ms=0, retry_ms=1)
    b = book()
    # ETH 1h: the candle at T0 closes at T0+1h-1
    assert ETH not in dog.overdue(b, T0 + 30 * M)
    assert ETH in dog.overdue(b, T0 + HOUR_MS)


def test_watchdog_validates() -> None:
    with pytest.raises(ValueError):
        Watchdog(grace_ms=-1, retry_ms=1)


def test_pairs_needing_fill_after_reconnect() -> None:
    b = book()
    assert pairs_needing_fill(b, [BTC, ETH], T0 + M) == []
    assert pairs_needing_fill(b, [BTC, ETH], T0 + 2 * M) == [BTC]
    assert pairs_needing_fill(b, [BTC, ETH], T0 + HOUR_MS) == [BTC, ETH]


def test_stale_connections_need_both_clocks() -> None:
    last = {0: (T0, 100.0), 1: (T0 + 25_000, 100.0), 2: (T0, 109.5)}
    # exchange 30 s silent and wall 10 s silent → stale; conn 1: only 5 s of exchange time;
    # conn 2: 30 s of (accelerated) exchange time but only 0.5 s of wall time
    assert stale_connections(last, T0 + 30_000, 110.0, 30_000, 2.0) == [0]


# -- rotation -------------------------------------------------------------------------------


def test_rotation_due_in_exchange_time() -> None:
    policy = RotationPolicy(rotate_after_ms=23 * HOUR_MS)
    opened = T0
    assert not policy.due(opened, T0 + 23 * HOUR_MS - 1)
    assert policy.due(opened, T0 + 23 * HOUR_MS)


def test_rotation_is_staggered_but_stays_before_the_24h_cut() -> None:
    policy = RotationPolicy(rotate_after_ms=23 * HOUR_MS, stagger_ms=10 * M)
    assert policy.deadline(T0, 0) == T0 + 23 * HOUR_MS
    assert policy.deadline(T0, 3) == T0 + 23 * HOUR_MS + 30 * M
    # a huge index never goes past 99 % of 24 h
    assert policy.deadline(T0, 1000) < T0 + 24 * HOUR_MS
    short = RotationPolicy(rotate_after_ms=HOUR_MS, stagger_ms=M)
    assert short.deadline(T0, 2) == T0 + HOUR_MS + 2 * M


def test_handover_waits_for_the_replacement_to_deliver() -> None:
    policy = RotationPolicy(rotate_after_ms=HOUR_MS, handover_timeout_s=30.0)
    assert policy.handover(False, 1.0) is Handover.WAIT
    assert policy.handover(True, 1.0) is Handover.CLOSE_OLD
    assert policy.handover(False, 30.0) is Handover.ABANDON
    with pytest.raises(ValueError):
        RotationPolicy(rotate_after_ms=0)
