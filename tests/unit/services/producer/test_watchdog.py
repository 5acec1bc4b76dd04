"""services.producer.watchdog and rotation: overdue pairs, silent connections, 24 h rotation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qryptify.pairs import HOUR_MS, MINUTE_MS, Pair, interval_ms
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


# -- the watchdog's memory of its last scan ---------------------------------------------------

_OPS = st.lists(
    st.tuples(
        st.sampled_from(["tick", "offer", "ack", "fail", "absent", "busy", "idle", "fetched"]),
        st.sampled_from([BTC, ETH, Pair("SOLUSDT", "5m")]),
        st.integers(0, 8),  # candle index after T0
        st.integers(0, 3 * M),  # time step
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(_OPS, st.integers(0, 20_000), st.integers(1, 20_000))
def test_remembered_scans_answer_like_a_full_scan(
    ops: list[tuple[str, Pair, int, int]], grace_ms: int, retry_ms: int
) -> None:
    sol = Pair("SOLUSDT", "5m")
    b = LiveBook({BTC: T0, ETH: T0 - HOUR_MS, sol: T0})
    dog = Watchdog(grace_ms=grace_ms, retry_ms=retry_ms)
    busy: set[Pair] = set()
    now = T0
    for op, pair, index, step in ops:
        t = T0 + index * interval_ms(pair.interval)
        if op == "tick":
            now += step
        elif op == "offer":
            b.offer(make_kline(pair.symbol, pair.interval, t))
        elif op == "ack":
            b.on_ack(pair, t)
        elif op == "fail":
            b.on_failed(pair, t)
        elif op == "absent":
            b.confirm_absent(pair, [t])
        elif op == "busy":
            busy.add(pair)
        elif op == "idle":
            busy.discard(pair)
        else:
            dog.fetched(pair, now)
        fresh = Watchdog(grace_ms=grace_ms, retry_ms=retry_ms, _not_before=dict(dog._not_before))
        assert dog.overdue(b, now, busy) == fresh.overdue(b, now, busy)


def test_a_failed_delivery_ends_the_quiet_span() -> None:
    dog = Watchdog(grace_ms=0, retry_ms=1)
    b = book()
    b.offer(make_kline("BTCUSDT", "1m", T0 + M))
    now = T0 + 2 * M + 1  # T0+1m closed, and it was sent
    assert dog.overdue(b, now) == []
    b.on_failed(BTC, T0 + M)  # Kafka gave up on it: missing again
    assert dog.overdue(b, now) == [BTC]
