"""Futures (funding rates): config section, record rules, REST/archive parsing, the Avro
round trip and schema evolution, the sink's staging, the 5-minute request window."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from qryptify.avro import AvroCodec, SchemaCatalogue, schemas_dir
from qryptify.config import build_config, load_config
from qryptify.errors import ConfigError, InvalidFuturesRecord, MalformedPayload, PairError
from qryptify.futures import records
from qryptify.futures.funding import (
    FUNDING_RATE,
    FundingArchiveFile,
    FundingRate,
    encode_funding,
    parse_archive_csv,
    parse_rest,
    record_from_avro,
    validate_funding,
)
from qryptify.futures.live import (
    CandleWatch,
    FundingWatch,
    mark_stream,
    mark_stream_url,
    parse_mark_frame,
)
from qryptify.futures.price import (
    PriceArchiveFile,
    PriceKline,
    day_files,
    enabled_kinds,
    month_files,
    parse_archive,
    validate_price_kline,
)
from qryptify.futures.price import parse_rest as parse_price_rest
from qryptify.futures.sink import stage
from qryptify.futures.sources import FiveMinuteWindow
from qryptify.pairs import Pair
from qryptify.sink.batch import Record

JUN = 1_717_200_000_000  # 2024-06-01 00:00 UTC
H8 = 8 * 3_600_000


def funding(t: int = JUN, rate: str = "0.00010000", **kw: object) -> FundingRate:
    fields: dict[str, object] = {
        "symbol": "BTCUSDT", "funding_time": t, "funding_rate": rate, "mark_price": None,
        "interval_hours": 8, "source": "archive", "ingested_at": JUN,
    }  # fmt: skip
    fields.update(kw)
    return FundingRate(**fields)  # type: ignore[arg-type]


# -- config ------------------------------------------------------------------------------------
def test_futures_is_off_by_default() -> None:
    cfg = build_config({})
    assert not cfg.futures.enabled
    assert not cfg.futures.funding_rates
    assert cfg.futures.topic == "klines.futures"


def test_env_overrides_the_futures_section(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("pairs: [BTCUSDT/1h]\n")
    env = {"QRYPTIFY_FUTURES__FUNDING_RATES": "true", "QRYPTIFY_FUTURES__TOPIC": "f.x"}
    cfg = load_config(path, env)
    assert cfg.futures.funding_rates and cfg.futures.topic == "f.x"
    assert cfg.futures.sink_group("qryptify-sink") == "qryptify-sink.futures"


@pytest.mark.parametrize(
    ("section", "key", "words"),
    [
        ({"funding_rates": "maybe"}, "futures.funding_rates", "boolean"),
        ({"mark_price": "often"}, "futures.mark_price", "boolean"),
        ({"topic": "bad topic"}, "futures.topic", "topic name"),
        ({"topic": "klines"}, "futures.topic", "differ from the kafka topics"),
        ({"funding_page_limit": 1001}, "futures.funding_page_limit", "1000"),
        ({"fundng_rates": True}, "futures.fundng_rates", "allowed: funding_rates"),
    ],
)
def test_bad_futures_config_is_one_line_naming_the_key(
    section: dict[str, object], key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as info:
        build_config({"futures": section})
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith((f"config {key}=", f"config {key}:"))
    assert words in text


# -- record rules and parsing ------------------------------------------------------------------
@pytest.mark.parametrize(
    "change",
    [
        {"symbol": "btcusdt"},
        {"funding_time": 12},
        {"funding_rate": "1e-4"},
        {"funding_rate": "NaN"},
        {"mark_price": "-1.0"},
        {"interval_hours": 0},
        {"interval_hours": 25},
        {"source": "ftp"},
    ],
)
def test_invalid_funding_records_are_named(change: dict[str, Any]) -> None:
    with pytest.raises(InvalidFuturesRecord, match=next(iter(change)).split("_")[0]):
        validate_funding(funding(**change))


def test_rest_rows_parse_with_mark_price_and_without_interval() -> None:
    body = [
        {"symbol": "BTCUSDT", "fundingRate": "-0.00012000", "fundingTime": JUN,
         "markPrice": "67000.12345678"},
        {"symbol": "BTCUSDT", "fundingRate": "0.00010000", "fundingTime": JUN + H8,
         "markPrice": ""},
    ]  # fmt: skip
    rows = parse_rest("BTCUSDT", body, 5)
    assert rows == [
        FundingRate("BTCUSDT", JUN, "-0.00012000", "67000.12345678", None, "rest", 5),
        FundingRate("BTCUSDT", JUN + H8, "0.00010000", None, None, "rest", 5),
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"code": -1121},
        [{"symbol": "ETHUSDT", "fundingRate": "0.1", "fundingTime": JUN}],
        [{"symbol": "BTCUSDT", "fundingRate": 0.1, "fundingTime": JUN}],
        [{"symbol": "BTCUSDT", "fundingRate": "x", "fundingTime": JUN}],
        [
            {"symbol": "BTCUSDT", "fundingRate": "0.1", "fundingTime": JUN + H8},
            {"symbol": "BTCUSDT", "fundingRate": "0.1", "fundingTime": JUN},
        ],
    ],
)
def test_off_shape_rest_bodies_are_malformed(body: object) -> None:
    with pytest.raises(MalformedPayload):
        parse_rest("BTCUSDT", body, 0)


def test_archive_file_layout() -> None:
    file = FundingArchiveFile.month("ETHUSDT", JUN + 12 * H8)
    assert (
        file.path == "data/futures/um/monthly/fundingRate/ETHUSDT/ETHUSDT-fundingRate-2024-06.zip"
    )
    assert file.csv_name == "ETHUSDT-fundingRate-2024-06.csv"
    assert file.end_ms - file.start_ms == 30 * 86_400_000


def test_archive_csv_parses_with_the_interval_and_without_mark_price() -> None:
    file = FundingArchiveFile.month("BTCUSDT", JUN)
    csv = f"calc_time,funding_interval_hours,last_funding_rate\n{JUN},8,0.00010000\n"
    csv += f"{JUN + H8 // 2},4,-0.00002000\n"
    assert parse_archive_csv(csv.encode(), file, 9) == [
        FundingRate("BTCUSDT", JUN, "0.00010000", None, 8, "archive", 9),
        FundingRate("BTCUSDT", JUN + H8 // 2, "-0.00002000", None, 4, "archive", 9),
    ]


@pytest.mark.parametrize(
    ("csv", "words"),
    [
        (f"{JUN},8\n", "line 1"),
        (f"{JUN},8,0.1\n{JUN},8,0.1\n", "out of order"),
        (f"{JUN - 1},8,0.1\n", "outside the month"),
        (f"{JUN},99,0.1\n", "interval_hours"),
    ],
)
def test_bad_archive_csv_names_the_line(csv: str, words: str) -> None:
    file = FundingArchiveFile.month("BTCUSDT", JUN)
    with pytest.raises(MalformedPayload, match=words):
        parse_archive_csv(csv.encode(), file, 0)


# -- Avro --------------------------------------------------------------------------------------
def test_funding_round_trips_through_avro() -> None:
    codec = AvroCodec()
    for f in (funding(), funding(mark_price="1.5", interval_hours=None, source="rest")):
        assert record_from_avro(*codec.decode(encode_funding(codec, f))) == f


def test_a_funding_record_written_before_a_field_was_added_still_decodes(tmp_path: Path) -> None:
    """Schema evolution: the current schema as an old writer, a new reader with one more
    (defaulted) field; the old bytes decode with the default."""
    old_text = (schemas_dir() / "funding_rate.avsc").read_text()
    old = AvroCodec(SchemaCatalogue.from_dir(schemas_dir()))
    value = encode_funding(old, funding())
    new_schema = json.loads(old_text)
    new_schema["fields"].append({"name": "premium", "type": ["null", "string"], "default": None})
    (tmp_path / "history").mkdir()
    (tmp_path / "history" / "funding_rate.v1.avsc").write_text(old_text)
    (tmp_path / "funding_rate.avsc").write_text(json.dumps(new_schema))
    (tmp_path / "kline.avsc").write_text((schemas_dir() / "kline.avsc").read_text())
    name, record = AvroCodec(SchemaCatalogue.from_dir(tmp_path)).decode(value)
    assert name == FUNDING_RATE
    assert record["premium"] is None
    assert record["funding_rate"] == "0.00010000"


# -- sink staging ------------------------------------------------------------------------------
def test_stage_keeps_the_last_value_per_funding_and_sends_bad_records_to_the_dlq() -> None:
    codec = AvroCodec()
    key = b"BTCUSDT|funding"
    first = encode_funding(codec, funding(rate="0.1"))
    later = encode_funding(codec, funding(rate="0.2"))
    other = encode_funding(codec, funding(t=JUN + H8))
    bad = encode_funding(codec, funding(rate="0.3")).replace(b"0.3", b"x.3")
    records = [
        Record("t", 0, 10, key, first),
        Record("t", 0, 11, key, later),
        Record("t", 1, 5, key, other),
        Record("t", 1, 6, key, bad),
        Record("t", 1, 7, b"ETHUSDT|funding", other),
        Record("t", 1, 8, key, None),
    ]
    batch = stage(records, codec)
    assert [(f.funding_time, f.funding_rate) for f in batch.funding] == [
        (JUN, "0.2"),
        (JUN + H8, "0.00010000"),
    ]
    assert [e.offset for e in batch.dlq] == [6, 7, 8]
    assert "funding_rate" in batch.dlq[0].reason
    assert batch.offsets == {("t", 0): 12, ("t", 1): 9}


# -- the endpoint's own limit ------------------------------------------------------------------
def test_five_minute_window_holds_requests_beyond_the_limit() -> None:
    window = FiveMinuteWindow(requests=5, window_s=300, margin=1)
    assert [window.wait_s(float(t)) for t in range(4)] == [0.0] * 4
    assert window.wait_s(10.0) == pytest.approx(290.0)  # the 5th would leave no margin
    assert window.wait_s(300.5) == 0.0  # the first one left the window


# -- price klines ------------------------------------------------------------------------------
def price(kind: str = "mark", **kw: Any) -> PriceKline:
    fields: dict[str, Any] = {
        "kind": kind, "symbol": "BTCUSDT", "interval": "1h", "open_time": JUN,
        "close_time": JUN + 3_599_999, "open": "100.5", "high": "101.0", "low": "99.0",
        "close": "100.0", "samples": 3600, "source": "rest", "ingested_at": JUN,
    }  # fmt: skip
    fields.update(kw)
    return PriceKline(**fields)


def test_price_kinds_are_configurable_and_listed_in_order() -> None:
    cfg = build_config({"futures": {"premium_index": True, "mark_price": True}})
    assert cfg.futures.enabled and not cfg.futures.funding_rates
    assert enabled_kinds(cfg) == ["mark", "premium"]
    assert enabled_kinds(build_config({})) == []


def test_rest_rows_become_price_klines_with_the_sample_count() -> None:
    body = [[JUN, "-0.0001", "0.0002", "-0.0003", "0.0001", "0", JUN + 3_599_999, "0", 3600,
             "0", "0", "0"]]  # fmt: skip
    (k,) = parse_price_rest("premium", Pair("BTCUSDT", "1h"), body, 7)
    assert k == price("premium", open="-0.0001", high="0.0002", low="-0.0003", close="0.0001",
                      ingested_at=7)  # fmt: skip
    assert k.key == "BTCUSDT|premium|1h"
    assert validate_price_kline(k) is k


@pytest.mark.parametrize(
    "change",
    [
        {"kind": "last"},
        {"interval": "7m"},
        {"close_time": JUN + 3_600_000},
        {"high": "99.5"},
        {"open": "1e2"},
        {"samples": -1},
        {"source": "ftp"},
    ],
)
def test_invalid_price_klines_are_refused(change: dict[str, Any]) -> None:
    with pytest.raises(InvalidFuturesRecord, match="price kline"):
        validate_price_kline(price(**change))


def test_price_archive_files_live_beside_the_kline_files() -> None:
    pair = Pair("ETHUSDT", "4h")
    monthly = PriceArchiveFile.of("index", "monthly", pair, JUN + 5)
    assert monthly.path == (
        "data/futures/um/monthly/indexPriceKlines/ETHUSDT/4h/ETHUSDT-4h-2024-06.zip"
    )
    daily = PriceArchiveFile.of("premium", "daily", pair, JUN + 5)
    assert daily.path.startswith("data/futures/um/daily/premiumIndexKlines/ETHUSDT/4h/")
    files = month_files("mark", pair, JUN + 5, JUN + 62 * 86_400_000)
    assert [f.zip_name for f in files] == ["ETHUSDT-4h-2024-06.zip", "ETHUSDT-4h-2024-07.zip"]
    days = day_files("mark", pair, JUN + 5, JUN + 3 * 86_400_000 - 1)
    assert [f.zip_name for f in days] == ["ETHUSDT-4h-2024-06-01.zip", "ETHUSDT-4h-2024-06-02.zip"]
    assert day_files("mark", Pair("ETHUSDT", "1w"), JUN, JUN + 30 * 86_400_000) == []


def test_price_archive_csv_parses_the_kind_rows() -> None:
    file = PriceArchiveFile.of("mark", "monthly", Pair("BTCUSDT", "1h"), JUN)
    csv = (
        "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
        "taker_buy_volume,taker_buy_quote_volume,ignore\n"
        f"{JUN},100.5,101.0,99.0,100.0,0,{JUN + 3_599_999},0,3600,0,0,0\n"
    )
    assert parse_archive("mark", csv.encode(), file, JUN) == [price(source="archive")]


def test_price_klines_round_trip_and_stage_with_funding() -> None:
    codec = AvroCodec()
    k = price("index")
    assert records.decode(codec, records.encode(codec, k)) == k
    first = records.encode(codec, price("index", close="100.0"))
    later = records.encode(codec, price("index", close="100.5"))
    batch = stage(
        [
            Record("t", 0, 1, b"BTCUSDT|index|1h", first),
            Record("t", 0, 2, b"BTCUSDT|index|1h", later),
            Record("t", 0, 3, b"BTCUSDT|funding", encode_funding(codec, funding())),
            Record("t", 0, 4, b"BTCUSDT|mark|1h", later),
        ],
        codec,
    )
    assert [(p.kind, p.close) for p in batch.prices] == [("index", "100.5")]
    assert len(batch.funding) == 1
    assert [e.offset for e in batch.dlq] == [4]  # an index record under a mark key


# -- live: the markPrice stream and the watchdog -----------------------------------------------
def _frame(symbol: str = "BTCUSDT", nxt: int = JUN + H8, stream: str | None = None) -> str:
    data = {"e": "markPriceUpdate", "E": JUN, "s": symbol, "p": "1.0", "i": "1.0", "P": "1.0",
            "r": "0.0001", "T": nxt}  # fmt: skip
    return json.dumps({"stream": stream or mark_stream(symbol), "data": data})


def test_mark_stream_url_is_routed_and_keeps_the_stream_names_case() -> None:
    url = mark_stream_url("wss://fstream.binance.com/stream", ["BTCUSDT", "ETHUSDT"])
    assert url == (
        "wss://fstream.binance.com/market/stream?streams=btcusdt@markPrice@1s/ethusdt@markPrice@1s"
    )
    with pytest.raises(PairError):
        mark_stream_url("wss://x/market/stream", ["bad symbol"])


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        json.dumps({"stream": "btcusdt@markPrice@1s", "data": {"e": "kline"}}),
        _frame(nxt="soon"),  # type: ignore[arg-type]
        _frame(stream="ethusdt@markPrice@1s"),
    ],
)
def test_malformed_mark_frames_are_named(raw: str) -> None:
    with pytest.raises(MalformedPayload):
        parse_mark_frame(raw)


def test_a_later_next_funding_time_means_a_funding_settled() -> None:
    watch = FundingWatch(published={"BTCUSDT": JUN - H8})
    assert watch.on_update(parse_mark_frame(_frame(nxt=JUN))) is False  # first sight
    assert watch.on_update(parse_mark_frame(_frame(nxt=JUN))) is False
    assert watch.due(JUN - 1, 0) == []
    assert watch.on_update(parse_mark_frame(_frame(nxt=JUN + H8))) is True
    assert watch.due(JUN + 5_000, 5_000) == ["BTCUSDT"]  # JUN settled, not published
    watch.fetched("BTCUSDT", None, JUN + 5_000, 1_000)  # REST did not have it yet
    assert watch.due(JUN + 5_500, 5_000) == []  # retry interval
    assert watch.due(JUN + 6_000, 5_000) == ["BTCUSDT"]
    watch.fetched("BTCUSDT", JUN, JUN + 6_000, 1_000)
    assert watch.due(JUN + 8_000, 5_000) == []
    # No frame at all past the announced time (a dropped stream): the watchdog still fetches.
    assert watch.due(JUN + H8 + 5_000, 5_000) == ["BTCUSDT"]


def test_candle_series_are_due_after_their_next_close_plus_grace() -> None:
    watch = CandleWatch(published={("mark", "BTCUSDT", "1h"): JUN})
    next_close_end = JUN + 2 * 3_600_000  # the candle opening at JUN + 1h ends here
    assert watch.due(next_close_end + 4_999, 5_000) == []
    assert watch.due(next_close_end + 5_000, 5_000) == [("mark", "BTCUSDT", "1h")]
    watch.fetched(("mark", "BTCUSDT", "1h"), JUN + 3_600_000, next_close_end + 5_000, 5_000)
    assert watch.due(next_close_end + 10_000, 5_000) == []


def test_a_price_kline_written_before_the_schema_evolved_still_decodes(tmp_path: Path) -> None:
    """Schema evolution for PriceKline: the reader gains a defaulted field and a new enum
    symbol; records of the old writer decode through ``records.decode`` with the default."""
    old_text = (schemas_dir() / "price_kline.avsc").read_text()
    value = records.encode(AvroCodec(), price("premium"))
    new_schema = json.loads(old_text)
    new_schema["fields"][0]["type"]["symbols"].append("funding_basis")
    new_schema["fields"].append({"name": "quality", "type": ["null", "string"], "default": None})
    (tmp_path / "history").mkdir()
    (tmp_path / "history" / "price_kline.v1.avsc").write_text(old_text)
    (tmp_path / "price_kline.avsc").write_text(json.dumps(new_schema))
    (tmp_path / "kline.avsc").write_text((schemas_dir() / "kline.avsc").read_text())
    reader = AvroCodec(SchemaCatalogue.from_dir(tmp_path))
    name, record = reader.decode(value)
    assert record["quality"] is None and record["kind"] == "premium"
    assert records.decode(reader, value) == price("premium")  # extra field ignored
