"""Pure health computations: windows, gaps, coverage, pointers, lag, the verdict. No I/O."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qryptify.gaps import jumps
from qryptify.health_report import (
    DatabaseHealth,
    Gap,
    Hypertable,
    KafkaHealth,
    PairFacts,
    StatusReport,
    Thresholds,
    arrival_budget_ms,
    assess_pair,
    count_empty,
    coverage,
    default_max_stale_ms,
    format_duration,
    gaps_from_jumps,
    judge,
    merge_ranges,
    parse_duration_ms,
    partition_lags,
    pointer_state,
    render_text,
    subtract_empty,
    to_json,
    window,
)
from qryptify.pairs import DAY_MS, HOUR_MS, MINUTE_MS, Pair, next_open, open_times
from tests.conftest import T0

M = MINUTE_MS
JAN_2024 = T0
FEB_2024 = 1_706_745_600_000
MAR_2024 = 1_709_251_200_000
APR_2024 = 1_711_929_600_000
MAY_2024 = 1_714_521_600_000


def facts(
    pair: Pair,
    opens: list[int],
    *,
    start_ms: int,
    now_ms: int,
    empty: tuple[tuple[int, int], ...] = (),
    pointer_ms: int | None = -1,
) -> PairFacts:
    """What read_pair would return for these stored opens (computed the slow, obvious way)."""
    first = min(opens) if opens else None
    lo, hi = window(pair.interval, start_ms, first, now_ms)
    inside = [t for t in opens if lo <= t < hi]
    return PairFacts(
        pair=pair,
        first_ms=first,
        last_ms=max(opens) if opens else None,
        rows_total=len(opens),
        rows_in_window=len(inside),
        first_in_window_ms=min(inside) if inside else None,
        jumps=tuple(jumps(pair.interval, inside)),
        empty_ranges=empty,
        pointer_ms=(max(opens) if opens else None) if pointer_ms == -1 else pointer_ms,
    )


def find_gaps(
    interval: str,
    opens: list[int],
    start_ms: int,
    end_ms: int,
    empty: list[tuple[int, int]] | None = None,
) -> list[Gap]:
    """The gaps ``qryptify status`` reports for these stored opens in ``[start_ms, end_ms)``:
    the jumps its query returns, through the report."""
    inside = sorted({t for t in opens if start_ms <= t < end_ms})
    first = inside[0] if inside else None
    return gaps_from_jumps(interval, start_ms, end_ms, first, jumps(interval, inside), empty or [])


# -- window -----------------------------------------------------------------------------------


def test_window_runs_from_backfill_start_to_the_newest_closed_candle() -> None:
    # now is 10.5 minutes in: the candle opening at 10 m is still open.
    assert window("1m", T0, T0, T0 + 10 * M + 30_000) == (T0, T0 + 10 * M)


def test_window_starts_at_the_first_candle_when_the_symbol_listed_later() -> None:
    listed = T0 + 3 * HOUR_MS
    assert window("1h", T0, listed, T0 + 5 * HOUR_MS) == (listed, T0 + 5 * HOUR_MS)


def test_window_aligns_an_unaligned_start_date_up_to_the_grid() -> None:
    start, _ = window("4h", T0 + 1, None, T0 + DAY_MS)
    assert start == T0 + 4 * HOUR_MS


def test_window_is_empty_before_the_first_candle_closes() -> None:
    start, end = window("1d", T0, None, T0 + HOUR_MS)
    assert start == end == T0


def test_window_for_months_follows_the_calendar() -> None:
    assert window("1M", JAN_2024, None, APR_2024 + 5 * DAY_MS) == (JAN_2024, APR_2024)


# -- gaps -------------------------------------------------------------------------------------


def test_no_gaps_in_a_complete_series() -> None:
    opens = [T0 + i * M for i in range(10)]
    assert find_gaps("1m", opens, T0, T0 + 10 * M) == []


def test_a_hole_between_stored_candles_is_one_gap_with_its_count() -> None:
    opens = [T0 + i * M for i in range(10) if i not in (3, 4, 5)]
    assert find_gaps("1m", opens, T0, T0 + 10 * M) == [Gap(T0 + 3 * M, T0 + 6 * M, 3)]


def test_the_tail_after_the_newest_candle_is_not_a_gap() -> None:
    opens = [T0 + i * M for i in range(5)]
    assert find_gaps("1m", opens, T0, T0 + 60 * M) == []


def test_a_hole_at_the_window_start_counts_when_older_data_exists() -> None:
    # Candles before backfill.start_date exist; the window starts at T0, first one inside at +2.
    opens = [T0 - 2 * M, T0 - M, T0 + 2 * M, T0 + 3 * M]
    assert find_gaps("1m", opens, T0, T0 + 4 * M) == [Gap(T0, T0 + 2 * M, 2)]


def test_gaps_outside_the_window_are_ignored() -> None:
    opens = [T0 - 10 * M, T0, T0 + M]  # the 9-candle hole ends at T0, where the window starts
    assert find_gaps("1m", opens, T0, T0 + 2 * M) == []


def test_exchange_confirmed_empty_opens_are_not_gaps() -> None:
    opens = [T0 + i * M for i in range(10) if i not in (3, 4, 5)]
    assert find_gaps("1m", opens, T0, T0 + 10 * M, [(T0 + 3 * M, T0 + 6 * M)]) == []


def test_an_empty_range_inside_a_hole_splits_it() -> None:
    opens = [T0, T0 + 9 * M]
    found = find_gaps("1m", opens, T0, T0 + 10 * M, [(T0 + 4 * M, T0 + 6 * M)])
    assert found == [Gap(T0 + M, T0 + 4 * M, 3), Gap(T0 + 6 * M, T0 + 9 * M, 3)]


def test_month_gaps_use_the_calendar() -> None:
    opens = [JAN_2024, FEB_2024, APR_2024]  # March is missing; Feb 2024 has 29 days
    assert find_gaps("1M", opens, JAN_2024, MAY_2024) == [Gap(MAR_2024, APR_2024, 1)]


def test_weeks_open_on_monday() -> None:
    monday = 1_704_067_200_000  # 2024-01-01 was a Monday
    week = 7 * DAY_MS
    opens = [monday, monday + 2 * week]
    assert find_gaps("1w", opens, monday, monday + 3 * week) == [
        Gap(monday + week, monday + 2 * week, 1)
    ]


def test_jumps_are_what_sql_lead_returns() -> None:
    opens = [T0, T0 + M, T0 + 4 * M, T0 + 5 * M, T0 + 9 * M]
    assert jumps("1m", opens) == [(T0 + M, T0 + 4 * M), (T0 + 5 * M, T0 + 9 * M)]


def test_gaps_from_jumps_clip_to_the_window() -> None:
    assert gaps_from_jumps("1m", T0, T0 + 5 * M, T0, [(T0 + M, T0 + 20 * M)], []) == [
        Gap(T0 + 2 * M, T0 + 5 * M, 3)
    ]


@given(
    present=st.sets(st.integers(0, 59)),
    empty=st.lists(st.tuples(st.integers(0, 60), st.integers(1, 20)), max_size=4),
    lo=st.integers(0, 30),
)
def test_gaps_agree_with_brute_force(
    present: set[int], empty: list[tuple[int, int]], lo: int
) -> None:
    start, end = T0 + lo * M, T0 + 60 * M
    opens = [T0 + i * M for i in present]
    ranges = [(T0 + a * M, T0 + (a + n) * M) for a, n in empty]
    inside = [t for t in opens if start <= t < end]
    newest = max(inside, default=start)
    confirmed = {t for a, b in ranges for t in open_times("1m", a, b)}
    expected_missing = {
        t for t in open_times("1m", start, newest) if t not in set(opens) and t not in confirmed
    }
    found = find_gaps("1m", opens, start, end, ranges)
    listed = {t for g in found for t in open_times("1m", g.start_ms, g.end_ms)} - confirmed
    assert listed == expected_missing
    assert sum(g.missing for g in found) == len(expected_missing)
    assert all(g.missing > 0 for g in found)


# -- empty ranges -----------------------------------------------------------------------------


def test_merge_ranges_joins_overlapping_and_touching() -> None:
    assert merge_ranges([(5, 7), (1, 3), (3, 4), (6, 9), (2, 2)]) == [(1, 4), (5, 9)]


def test_count_empty_clips_to_the_window() -> None:
    assert (
        count_empty("1m", T0, T0 + 10 * M, [(T0 - 5 * M, T0 + 2 * M), (T0 + 9 * M, T0 + 20 * M)])
        == 3
    )


def test_subtract_empty_keeps_the_uncovered_parts() -> None:
    assert subtract_empty("1m", T0, T0 + 6 * M, [(T0 + 2 * M, T0 + 3 * M)]) == [
        Gap(T0, T0 + 2 * M, 2),
        Gap(T0 + 3 * M, T0 + 6 * M, 3),
    ]


# -- coverage, staleness, pointer -------------------------------------------------------------


def test_coverage_is_a_ratio_capped_at_one() -> None:
    assert coverage(0, 0) == 1.0
    assert coverage(50, 200) == 0.25
    assert coverage(5, 4) == 1.0


def test_assess_complete_pair_is_healthy() -> None:
    pair = Pair("BTCUSDT", "1m")
    opens = [T0 + i * M for i in range(10)]
    now = T0 + 10 * M + 5_000
    health = assess_pair(facts(pair, opens, start_ms=T0, now_ms=now), T0, now)
    assert (health.expected, health.present, health.coverage) == (10, 10, 1.0)
    assert health.gaps == ()
    assert health.behind == 0
    assert health.stale_ms == 5_000
    assert health.pointer == "ok"


def test_assess_counts_gaps_tail_and_empty_ranges() -> None:
    pair = Pair("BTCUSDT", "1m")
    opens = [T0 + i * M for i in range(20) if i not in (2, 3, 7)]
    now = T0 + 25 * M + 1
    empty = ((T0 + 7 * M, T0 + 8 * M),)
    health = assess_pair(facts(pair, opens, start_ms=T0, now_ms=now, empty=empty), T0, now)
    # Window: 25 closed candles, one confirmed empty → 24 expected; 17 stored.
    assert health.expected == 24
    assert health.present == 17
    assert health.coverage == pytest.approx(17 / 24)
    assert health.gaps == (Gap(T0 + 2 * M, T0 + 4 * M, 2),)
    assert health.missing_in_gaps == 2
    assert health.behind == 5  # opens 20..24 closed, not stored yet
    assert health.stale_ms == now - (T0 + 20 * M)


def test_assess_pair_listed_after_the_start_date_is_measured_from_its_first_candle() -> None:
    pair = Pair("NEWUSDT", "1h")
    listed = T0 + 30 * DAY_MS
    opens = [listed + i * HOUR_MS for i in range(24)]
    now = listed + 24 * HOUR_MS + 1
    health = assess_pair(facts(pair, opens, start_ms=T0, now_ms=now), T0, now)
    assert health.window_start_ms == listed
    assert health.coverage == 1.0
    assert health.gaps == ()


def test_assess_pair_without_data() -> None:
    pair = Pair("BTCUSDT", "1m")
    now = T0 + 10 * M
    health = assess_pair(facts(pair, [], start_ms=T0, now_ms=now), T0, now)
    assert (health.expected, health.present, health.coverage) == (10, 0, 0.0)
    assert health.stale_ms is None
    assert health.pointer == "no data"


@pytest.mark.parametrize(
    ("pointer", "last", "state"),
    [(5, 5, "ok"), (4, 5, "behind"), (6, 5, "ahead"), (None, 5, "missing"), (None, None, "no data"),
     (5, None, "ahead")],
)  # fmt: skip
def test_pointer_state(pointer: int | None, last: int | None, state: str) -> None:
    assert pointer_state(pointer, last) == state


def test_default_staleness_limit_is_two_intervals_and_a_minute() -> None:
    assert default_max_stale_ms("1m") == 3 * M
    assert default_max_stale_ms("4h") == 8 * HOUR_MS + M
    assert default_max_stale_ms("1M") == 62 * DAY_MS + M


# -- Kafka lag --------------------------------------------------------------------------------


def test_partition_lag_against_committed_offsets() -> None:
    lags = partition_lags({0: 10, 1: 5, 2: 0}, {0: 7, 1: -1001})
    assert [(p.partition, p.committed, p.high, p.lag) for p in lags] == [
        (0, 7, 10, 3),
        (1, None, 5, 5),  # never committed: the whole partition is pending
        (2, None, 0, 0),
    ]


# -- verdict ----------------------------------------------------------------------------------


def _report(
    opens: list[int], now: int, thresholds: Thresholds, kafka: KafkaHealth | None = None
) -> StatusReport:
    pair = Pair("BTCUSDT", "1m")
    health = assess_pair(
        facts(pair, opens, start_ms=T0, now_ms=now),
        T0,
        now,
        thresholds.max_stale_ms,
        thresholds.arrival_budget_ms,
    )
    report = StatusReport(
        now_ms=now,
        clock="test",
        backfill_start_ms=T0,
        database=DatabaseHealth(
            target="postgresql://u:***@h:5432/d", server_version="PostgreSQL 16"
        ),
        pairs=(health,),
        kafka=kafka
        or KafkaHealth("k:9092", "klines", "qryptify-sink", "klines.dlq", dlq_records=0),
        thresholds=thresholds,
    )
    return dataclasses.replace(report, breaches=tuple(judge(report)))


def test_verdict_healthy() -> None:
    report = _report([T0 + i * M for i in range(10)], T0 + 10 * M + 1, Thresholds())
    assert report.breaches == ()
    assert report.healthy
    assert render_text(report).rstrip().endswith("HEALTHY")


def test_verdict_gaps_over_the_limit() -> None:
    opens = [T0 + i * M for i in range(10) if i != 4]
    now = T0 + 10 * M + 1
    assert [b.check for b in _report(opens, now, Thresholds()).breaches] == ["gaps"]
    assert _report(opens, now, Thresholds(max_gaps=1)).healthy


def test_a_candle_closed_within_the_arrival_budget_is_arriving_not_a_gap() -> None:
    # 08 missing, 09 stored (published by the other service); 08 closed 60 s before now
    opens = [T0 + i * M for i in range(10) if i != 8]
    now = T0 + 10 * M + 1
    within = _report(opens, now, Thresholds(arrival_budget_ms=61_000))
    assert within.healthy
    assert (within.pairs[0].gaps, within.pairs[0].arriving, within.pairs[0].behind) == ((), 1, 1)
    late = _report(opens, now, Thresholds(arrival_budget_ms=59_000))
    assert [b.check for b in late.breaches] == ["gaps"]
    assert (late.pairs[0].missing_in_gaps, late.pairs[0].arriving) == (1, 0)
    assert "gap once it closed 59s ago" in render_text(late)


def test_only_the_part_of_a_hole_within_the_budget_is_arriving() -> None:
    # 07 and 08 missing: 07 closed 2 min ago (a gap), 08 1 min ago (arriving)
    opens = [T0 + i * M for i in range(10) if i not in (7, 8)]
    report = _report(opens, T0 + 10 * M + 1, Thresholds(arrival_budget_ms=61_000))
    health = report.pairs[0]
    assert [(g.start_ms, g.end_ms, g.missing) for g in health.gaps] == [(T0 + 7 * M, T0 + 8 * M, 1)]
    assert (health.arriving, health.behind) == (1, 1)


def test_arrival_budget_is_grace_plus_retry_plus_sink_latency() -> None:
    # defaults: watchdog grace 5 s, REST retry 5 s, sink latency 200 ms
    assert arrival_budget_ms(5000, 5000, 200) == 10_200
    assert arrival_budget_ms(0, 1, 1) == 2


def test_verdict_stale_uses_the_per_pair_default_or_the_flag() -> None:
    opens = [T0 + i * M for i in range(10)]
    assert _report(opens, T0 + 13 * M, Thresholds()).healthy  # 3 min = the default limit
    stale = _report(opens, T0 + 13 * M + 1, Thresholds())
    assert [b.check for b in stale.breaches] == ["stale"]
    assert _report(opens, T0 + 13 * M + 1, Thresholds(max_stale_ms=10 * M)).healthy


def test_verdict_lag_and_dlq() -> None:
    opens = [T0 + i * M for i in range(10)]
    now = T0 + 10 * M + 1
    kafka = KafkaHealth(
        "k:9092",
        "klines",
        "g",
        "klines.dlq",
        partitions=tuple(partition_lags({0: 100, 1: 50}, {0: 40, 1: 50})),
        dlq_records=3,
    )
    assert _report(opens, now, Thresholds(max_lag=60), kafka).healthy
    breached = _report(opens, now, Thresholds(max_lag=59, max_dlq=2), kafka)
    assert [b.check for b in breached.breaches] == ["lag", "dlq"]


def test_verdict_unreachable_kafka_and_database_are_breaches() -> None:
    opens = [T0 + i * M for i in range(10)]
    report = _report(
        opens,
        T0 + 10 * M + 1,
        Thresholds(),
        KafkaHealth("k:9092", "klines", "g", "klines.dlq", error="_TRANSPORT: down"),
    )
    report = dataclasses.replace(
        report, database=DatabaseHealth(target="postgresql://u:***@h/d", error="refused")
    )
    assert sorted(b.check for b in judge(report)) == ["database", "kafka"]


def test_json_form_lists_every_gap_and_round_trips() -> None:
    opens = [T0 + i * M for i in range(30) if i % 3 != 1]  # 10 one-candle gaps
    report = _report(opens, T0 + 30 * M + 1, Thresholds())
    doc = json.loads(json.dumps(to_json(report)))
    assert doc["healthy"] is False
    assert doc["pairs"][0]["gap_count"] == 10
    assert len(doc["pairs"][0]["gaps"]) == 10
    assert doc["pairs"][0]["gaps"][0] == {"start_ms": T0 + M, "end_ms": T0 + 2 * M, "missing": 1}
    text = render_text(report)
    assert "and 5 more" in text  # the table lists the first five
    assert "core " not in text and doc["core"] == ""
    with_core = dataclasses.replace(report, core="native")
    assert render_text(with_core).splitlines()[1] == "core      native"
    assert to_json(with_core)["core"] == "native"


# -- parsing and formatting -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ms"),
    [("90", 90_000), ("90s", 90_000), ("15m", 15 * M), ("2h", 2 * HOUR_MS), ("1d", DAY_MS),
     ("500ms", 500), ("1.5h", 90 * M)],
)  # fmt: skip
def test_parse_duration(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("text", ["", "soon", "5 weeks", "-3s"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration_ms(text)


def test_format_duration() -> None:
    assert [format_duration(ms) for ms in (5_000, 10 * M, 5 * HOUR_MS + 7 * M, 3 * DAY_MS)] == [
        "5s",
        "10m",
        "5h07m",
        "3d00h",
    ]


def test_next_open_sanity_for_fixture_months() -> None:
    assert next_open("1M", JAN_2024) == FEB_2024
    assert next_open("1M", FEB_2024) == MAR_2024


def test_text_shows_timescaledb_hypertables() -> None:
    report = _report([T0 + i * M for i in range(10)], T0 + 10 * M + 1, Thresholds())
    timescale = DatabaseHealth(
        target="postgresql://u:***@h:5432/d",
        server_version="PostgreSQL 17.5 on x86_64",
        timescale_version="2.23.0",
        hypertables=(
            Hypertable(
                name="public.candlesticks",
                chunk_interval="1 day",
                num_chunks=3,
                compression_enabled=True,
                compressed_chunks=1,
                compress_after="7 days",
                segment_by="symbol, interval",
                order_by="ts DESC",
            ),
        ),
    )
    text = render_text(dataclasses.replace(report, database=timescale))
    assert "PostgreSQL 17.5; timescaledb 2.23.0" in text
    row = next(line for line in text.splitlines() if "public.candlesticks" in line).split()
    assert row == ["public.candlesticks", "1", "day", "3", "on", "1", "after", "7", "days",
                   "symbol,", "interval", "ts", "DESC"]  # fmt: skip
    doc = to_json(dataclasses.replace(report, database=timescale))
    assert doc["database"]["hypertables"][0]["segment_by"] == "symbol, interval"


def test_verdict_names_an_unlisted_symbol_and_judges_only_the_others() -> None:
    now = T0 + 10 * M + 1
    good = _report([T0 + i * M for i in range(10)], now, Thresholds())
    nope = Pair("NOPEUSDT", "1m")
    empty = assess_pair(facts(nope, [], start_ms=T0, now_ms=now), T0, now, None)
    report = dataclasses.replace(good, pairs=(*good.pairs, empty), unlisted=(nope,))
    report = dataclasses.replace(report, breaches=tuple(judge(report)))
    assert [(b.check, b.subject) for b in report.breaches] == [("unlisted", "NOPEUSDT/1m")]
    assert not report.healthy
    text = render_text(report)
    assert "unlisted NOPEUSDT/1m: symbol NOPEUSDT is not listed on the exchange" in text
    assert to_json(report)["unlisted"] == ["NOPEUSDT/1m"]
