"""Exchange-confirmed empty ranges of the price kinds: the record (rules, Avro round trip and
schema evolution), the sink's staging, REST confirmation (shared with the klines), the
position a resume continues after, status' gap arithmetic and ``tap``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from qryptify.avro import AvroCodec, SchemaCatalogue, schemas_dir
from qryptify.binance.rest import BinanceRest
from qryptify.errors import InvalidEmptyRange, UndecodableRecord
from qryptify.futures import records
from qryptify.futures import tap as futures_tap
from qryptify.futures.price import PriceEmptyRange, PriceKline, validate_price_empty_range
from qryptify.futures.sink import stage
from qryptify.futures.sources import PriceFetch, closed_price_klines
from qryptify.futures.status import price_gaps
from qryptify.kline import EmptyRange, Kline
from qryptify.pairs import HOUR_MS, Pair
from qryptify.planning import Page, confirmed_page_events
from qryptify.sink.batch import Record

JUN = 1_717_200_000_000  # 2024-06-01 00:00 UTC
NOW = JUN + 30 * 86_400_000
PAIR = Pair("BTCUSDT", "1h")


def empty(kind: str = "mark", start: int = JUN + 2 * HOUR_MS, hours: int = 2) -> PriceEmptyRange:
    return PriceEmptyRange(
        kind,  # type: ignore[arg-type]
        EmptyRange("BTCUSDT", "1h", start, start + hours * HOUR_MS, NOW),
    )


def price(kind: str = "mark", t: int = JUN, close: str = "100.0") -> PriceKline:
    return PriceKline(kind, "BTCUSDT", "1h", t, t + HOUR_MS - 1, "100.5", "101.0", "99.0",  # type: ignore[arg-type]
                      close, 3600, "rest", JUN)  # fmt: skip


# -- the record ---------------------------------------------------------------------------------
def test_price_empty_ranges_round_trip_keyed_like_their_series() -> None:
    codec = AvroCodec()
    e = empty("premium")
    assert records.decode(codec, records.encode(codec, e)) == e
    assert e.key == "BTCUSDT|premium|1h" == price("premium").key


@pytest.mark.parametrize(
    ("record", "words"),
    [
        (PriceEmptyRange("funding", empty().range), "unknown kind"),  # type: ignore[arg-type]
        (PriceEmptyRange("mark", EmptyRange("btc usdt", "1h", JUN, JUN + HOUR_MS, NOW)), "symbol"),
        (PriceEmptyRange("mark", EmptyRange("BTCUSDT", "1h", 5, 10, NOW)), "start_time"),
        (PriceEmptyRange("mark", EmptyRange("BTCUSDT", "1h", JUN, JUN + HOUR_MS, 7)), "confirmed"),
    ],
)
def test_invalid_price_empty_ranges_are_named(record: PriceEmptyRange, words: str) -> None:
    with pytest.raises(InvalidEmptyRange, match=words):
        validate_price_empty_range(record)


def test_a_reversed_range_on_the_topic_is_undecodable() -> None:
    codec = AvroCodec()
    value = codec.encode(
        "io.qryptify.binance.futures.PriceEmptyRange",
        {"kind": "mark", "symbol": "BTCUSDT", "interval": "1h", "start_time": JUN,
         "end_time": JUN, "confirmed_at": NOW},
    )  # fmt: skip
    with pytest.raises(UndecodableRecord, match="PriceEmptyRange fields do not fit"):
        records.decode(codec, value)


def _catalogue(tmp_path: Path, names: Sequence[str]) -> SchemaCatalogue:
    for name in names:
        (tmp_path / name).write_text((schemas_dir() / name).read_text())
    return SchemaCatalogue.from_dir(tmp_path)


def test_a_price_empty_range_written_before_the_schema_evolved_still_decodes(
    tmp_path: Path,
) -> None:
    """Schema evolution: the reader gains a defaulted field and a new enum symbol; records of
    the current writer decode through ``records.decode`` with the default."""
    old_text = (schemas_dir() / "price_empty_range.avsc").read_text()
    value = records.encode(AvroCodec(), empty("index"))
    new_schema = json.loads(old_text)
    new_schema["fields"][0]["type"]["symbols"].append("funding_basis")
    new_schema["fields"].append({"name": "reason", "type": ["null", "string"], "default": None})
    (tmp_path / "history").mkdir()
    (tmp_path / "history" / "price_empty_range.v1.avsc").write_text(old_text)
    (tmp_path / "price_empty_range.avsc").write_text(json.dumps(new_schema))
    reader = AvroCodec(_catalogue(tmp_path, ["kline.avsc"]))
    name, record = reader.decode(value)
    assert name == "io.qryptify.binance.futures.PriceEmptyRange"
    assert record["reason"] is None and record["kind"] == "index"
    assert records.decode(reader, value) == empty("index")


def test_a_reader_from_before_the_record_existed_keeps_reading_the_others(tmp_path: Path) -> None:
    """Adding the record type changes nothing for the existing ones (same schemas, same
    fingerprints); a reader without it names the record as unknown (the sink's DLQ path)."""
    old = AvroCodec(_catalogue(tmp_path, ["kline.avsc", "price_kline.avsc", "funding_rate.avsc"]))
    codec = AvroCodec()
    assert records.decode(old, records.encode(codec, price())) == price()
    with pytest.raises(UndecodableRecord, match="unknown schema fingerprint"):
        records.decode(old, records.encode(codec, empty()))


# -- the sink's staging -------------------------------------------------------------------------
def test_stage_keeps_the_widest_range_and_drops_the_candles_it_confirms_empty() -> None:
    codec = AvroCodec()
    inside = price(t=JUN + 2 * HOUR_MS)
    later = price(t=JUN + 3 * HOUR_MS, close="100.5")
    key = b"BTCUSDT|mark|1h"
    batch = stage(
        [
            Record("t", 0, 1, key, records.encode(codec, inside)),  # before the range: dropped
            Record("t", 0, 2, key, records.encode(codec, price(t=JUN))),  # outside: kept
            Record("t", 0, 3, key, records.encode(codec, empty(hours=1))),
            Record("t", 0, 4, key, records.encode(codec, empty(hours=2))),  # wider, same start
            Record("t", 0, 5, key, records.encode(codec, later)),  # after the range: kept
            Record("t", 0, 6, b"BTCUSDT|index|1h", records.encode(codec, empty())),  # wrong key
            Record("t", 0, 7, b"BTCUSDT|index|1h", records.encode(codec, price("index", t=JUN))),
        ],
        codec,
    )
    assert batch.empty == [empty(hours=2)]
    assert sorted((p.kind, p.open_time) for p in batch.prices) == [
        ("index", JUN), ("mark", JUN), ("mark", JUN + 3 * HOUR_MS),
    ]  # fmt: skip
    assert [e.offset for e in batch.dlq] == [6]
    assert batch.offsets == {("t", 0): 8}


# -- REST confirmation (the klines' rule) -----------------------------------------------------
def _kline(t: int) -> Kline:
    return Kline("BTCUSDT", "1h", t, t + HOUR_MS - 1, "1", "1", "1", "1", "0", "0", 1, "0", "0",
                 "rest", NOW)  # fmt: skip


def _asker(*answers: list[int]) -> tuple[Any, list[int]]:
    calls: list[int] = []

    async def ask() -> list[Kline]:
        calls.append(1)
        return [_kline(t) for t in answers[len(calls) - 1]]

    return ask, calls


def test_slots_missing_from_two_answers_are_confirmed_empty() -> None:
    page = Page(JUN, JUN + 4 * HOUR_MS, 5)
    ask, calls = _asker([JUN, JUN + 3 * HOUR_MS, JUN + 4 * HOUR_MS], [JUN, JUN + 4 * HOUR_MS])
    closed, found = asyncio.run(confirmed_page_events(PAIR, page, ask, NOW, 499))
    assert len(calls) == 2
    assert [k.open_time for k in closed] == [JUN, JUN + 3 * HOUR_MS, JUN + 4 * HOUR_MS]
    assert [(e.start_time, e.end_time) for e in found] == [(JUN + HOUR_MS, JUN + 3 * HOUR_MS)]


def test_a_slot_the_second_answer_has_is_kept_not_empty() -> None:
    page = Page(JUN, JUN + 2 * HOUR_MS, 3)
    ask, calls = _asker([JUN, JUN + 2 * HOUR_MS], [JUN, JUN + HOUR_MS, JUN + 2 * HOUR_MS])
    closed, found = asyncio.run(confirmed_page_events(PAIR, page, ask, NOW, 499))
    assert [k.open_time for k in closed] == [JUN, JUN + HOUR_MS, JUN + 2 * HOUR_MS]
    assert found == [] and len(calls) == 2


def test_a_complete_answer_is_asked_once_and_a_page_over_the_limit_confirms_nothing() -> None:
    full, calls = _asker([JUN, JUN + HOUR_MS])
    assert (
        asyncio.run(confirmed_page_events(PAIR, Page(JUN, JUN + HOUR_MS, 2), full, NOW, 2))[1] == []
    )
    assert len(calls) == 1
    short, calls = _asker([JUN], [JUN])
    page = Page(JUN, JUN + 2 * HOUR_MS, 3)  # more slots than the limit: not a proof
    assert asyncio.run(confirmed_page_events(PAIR, page, short, NOW, 2))[1] == []
    assert len(calls) == 1


class FakeRest:
    """``BinanceRest._get`` over a fixed set of hourly open times (a maintenance window is
    the slots left out), as the exchange answers: ``startTime <= open <= endTime``, ``limit``."""

    def __init__(self, opens: Sequence[int], now: int = NOW) -> None:
        self.opens = list(opens)
        self.clock = SimpleNamespace(now_ms=lambda: now)
        self.sent: list[dict[str, Any]] = []

    async def _get(self, path: str, params: dict[str, Any], weight: int) -> list[list[Any]]:
        self.sent.append({"path": path, **params})
        rows = [t for t in self.opens if params["startTime"] <= t <= params["endTime"]]
        return [[t, "1", "1", "1", "1", "0", t + HOUR_MS - 1, "0", 3600, "0", "0", "0"]
                for t in rows[: params["limit"]]]  # fmt: skip


def test_rest_paging_of_a_price_kind_confirms_the_maintenance_window() -> None:
    hours = [JUN + h * HOUR_MS for h in range(10) if h not in (4, 5, 6)]
    rest = FakeRest(hours)
    now = JUN + 10 * HOUR_MS  # the candle opening at 9h closed
    found = asyncio.run(closed_price_klines(cast(BinanceRest, rest), "index", PAIR, JUN, now, 4))
    assert [k.open_time for k in found.klines] == hours
    assert {k.kind for k in found.klines} == {"index"}
    assert [(e.kind, e.range.start_time, e.range.end_time) for e in found.empty] == [
        ("index", JUN + 4 * HOUR_MS, JUN + 7 * HOUR_MS)
    ]
    # Pages of at most 4 slots (0-3, 4-7, 8-9), the one with missing slots asked twice.
    assert [(s["startTime"], s["endTime"]) for s in rest.sent] == [
        (JUN, JUN + 3 * HOUR_MS),
        (JUN + 4 * HOUR_MS, JUN + 7 * HOUR_MS),
        (JUN + 4 * HOUR_MS, JUN + 7 * HOUR_MS),
        (JUN + 8 * HOUR_MS, JUN + 9 * HOUR_MS),
    ]
    assert {s["path"] for s in rest.sent} == {"/fapi/v1/indexPriceKlines"}
    assert {s["pair"] for s in rest.sent} == {"BTCUSDT"}
    assert found.pages == 4
    bounded = asyncio.run(
        closed_price_klines(cast(BinanceRest, rest), "index", PAIR, JUN, now, 4, JUN + 5 * HOUR_MS)
    )
    assert [(e.range.start_time, e.range.end_time) for e in bounded.empty] == [
        (JUN + 4 * HOUR_MS, JUN + 5 * HOUR_MS)
    ]


def test_records_are_in_time_order_and_the_position_passes_a_trailing_empty_range() -> None:
    fetch = PriceFetch(klines=[price(t=JUN), price(t=JUN + 4 * HOUR_MS)], empty=[empty()])
    assert fetch.records() == [price(t=JUN), empty(), price(t=JUN + 4 * HOUR_MS)]
    assert fetch.position() == JUN + 4 * HOUR_MS
    tail = PriceFetch(klines=[price(t=JUN)], empty=[empty(start=JUN + HOUR_MS, hours=3)])
    assert tail.position() == JUN + 3 * HOUR_MS  # the last slot it covers
    assert PriceFetch().position() is None


# -- status and tap ---------------------------------------------------------------------------
def test_status_subtracts_confirmed_empty_candles_from_gaps() -> None:
    last = JUN + 9 * HOUR_MS  # 10 slots, 7 stored
    assert price_gaps("1h", JUN, last, 7, []) == (3, 0)
    assert price_gaps("1h", JUN, last, 7, [(JUN + 4 * HOUR_MS, JUN + 7 * HOUR_MS)]) == (0, 3)
    # Only confirmed slots between the first and the last candle count: 4h stays a gap.
    spans = [(JUN - 5 * HOUR_MS, JUN), (JUN + 5 * HOUR_MS, JUN + 7 * HOUR_MS)]
    assert price_gaps("1h", JUN, last, 7, spans) == (1, 2)


def test_tap_shows_price_empty_ranges() -> None:
    fields = futures_tap.fields(empty("mark"), 2, 41)
    assert fields["type"] == "empty_range" and fields["kind"] == "mark"
    assert (fields["start_time"], fields["end_time"]) == (JUN + 2 * HOUR_MS, JUN + 4 * HOUR_MS)
    assert {"kind", "end_time", "confirmed_at"} <= set(futures_tap.CSV_FIELDS)
    line = futures_tap.table_line(empty("mark"), 2, 41)
    assert line.startswith("2024-06-01T02:00:00.000Z")
    assert "BTCUSDT/1h mark" in line and "until 2024-06-01T04:00:00.000Z" in line
    assert line.endswith("2@41")
