"""The backfill → live handoff rules (qryptify.handoff), with exchange times given."""

from __future__ import annotations

from qryptify.handoff import live_start, plan_falls_short, planned_through, producer_resume_from
from qryptify.pairs import MINUTE_MS
from sim.symbols import parse_time_ms

T0 = parse_time_ms("2024-07-10T12:00:00Z")
M = MINUTE_MS


def test_plan_is_the_newest_closed_candle_at_planning_time() -> None:
    # at 12:01:30 the 12:00 candle is closed, the 12:01 one is open
    assert planned_through("1m", T0 + 90_000) == T0
    # 12:01:00.000: the 12:00 candle closed at 12:00:59.999
    assert planned_through("1m", T0 + M) == T0
    assert planned_through("1m", T0 + M - 1) == T0 - M
    assert planned_through("1h", T0 + 90_000) == T0 - 60 * M


def test_live_start_leaves_a_candle_that_may_not_have_closed_to_the_producer() -> None:
    # 12:01:00.200 with the estimate possibly 300 ms ahead: 12:00 may still be open, so the
    # producer owns it (its frontier is 11:59)
    assert live_start("1m", T0 + M + 200, 300) == T0 - M
    assert live_start("1m", T0 + M + 200, 100) == T0
    assert live_start("1m", T0 + M + 200, 0) == T0
    assert live_start("1m", T0 + M + 200, -5) == T0  # a negative bound counts as none


def test_producer_takes_over_from_a_plan_that_ends_before_its_live_start() -> None:
    # backfiller planned at 12:00:59.900 (through 11:59), producer started at 12:01:00.100
    plan, start = T0 - M, T0
    assert producer_resume_from(start, plan) == plan
    assert producer_resume_from(start, start) is None  # the pass reaches the live start
    assert producer_resume_from(start, start + 5 * M) is None  # overlap: nothing to take
    assert producer_resume_from(start, None) is None  # no plan yet: the backfiller will see it
    assert producer_resume_from(None, plan) is None  # no live start stored (pre-handoff run)


def test_backfiller_extends_a_plan_that_falls_short_of_the_live_start() -> None:
    assert plan_falls_short(T0 - M, T0)
    assert not plan_falls_short(T0, T0)
    assert not plan_falls_short(T0 + M, T0)
    assert not plan_falls_short(T0, None)


def test_one_side_always_covers_the_seam_whatever_the_interleaving() -> None:
    """Each side writes its mark, then reads the other's: at least one read sees the other
    write. Every order of the four steps where that holds leaves no candle to nobody."""
    plan = T0 - M  # backfiller planned at 12:00:59.9
    start = T0  # producer's live start read at 12:01:00.1
    for producer_sees_plan, backfiller_sees_start in ((True, False), (False, True), (True, True)):
        producer_from = producer_resume_from(start, plan if producer_sees_plan else None)
        owned_by_producer = start if producer_from is None else producer_from
        extended = plan_falls_short(plan, start if backfiller_sees_start else None)
        # with the extension the backfiller re-plans at a later exchange time, past `start`
        owned_by_backfiller = planned_through("1m", T0 + M + 500) if extended else plan
        assert owned_by_backfiller >= owned_by_producer, (producer_sees_plan, extended)
