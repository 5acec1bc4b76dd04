"""The fast Kline writer (``KlineEncoder``) and the archive's CSV-to-values path against the
reference: fastavro's ``schemaless_writer`` behind the codec's framing, byte for byte."""

from __future__ import annotations

import io
import random
from typing import Any, cast

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qryptify.avro import (
    KLINE,
    KlineCodec,
    encode_long,
    encode_time,
    kline_encoder,
)
from qryptify.binance.archive import CSV_HEADER_START, parse_csv, parse_csv_encoded
from qryptify.errors import ArchiveError
from qryptify.kline import SOURCES, Kline
from tests.conftest import T0, make_kline

CODEC = KlineCodec()
HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
    "taker_buy_quote_volume,ignore"
)


def reference(k: Kline, codec: KlineCodec = CODEC) -> bytes:
    """What the generic writer produces: framing prefix + fastavro's body."""
    version = codec.avro.catalogue.current[KLINE]
    buf = io.BytesIO()
    buf.write(codec.avro._prefix(version))
    fastavro.schemaless_writer(buf, version.parsed, {f: getattr(k, f) for f in Kline.__slots__})
    return buf.getvalue()


def long_reference(n: int) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, "long", n)
    return buf.getvalue()


EDGE_LONGS = [0, 1, -1, 63, 64, -64, -65, 8191, 8192, 2**31, 2**35 - 1, 2**35, 2**41 - 1]
EDGE_LONGS += [2**41, 2**42, 2**62, 2**63 - 1, -(2**63), T0, 999_999_999_999, 10**13]


@pytest.mark.parametrize("n", EDGE_LONGS)
def test_longs_and_times_equal_fastavro(n: int) -> None:
    assert encode_long(n) == long_reference(n)
    if n >= 0:
        assert encode_time(n) == long_reference(n)


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_any_long_equals_fastavro(n: int) -> None:
    assert encode_long(n) == long_reference(n)


def test_out_of_range_long_raises_like_fastavro() -> None:
    for n in (2**63, -(2**63) - 1):
        with pytest.raises(OverflowError):
            encode_long(n)
        with pytest.raises(OverflowError):
            long_reference(n)


decimal = st.from_regex(r"\A-?[0-9]{1,12}(\.[0-9]{1,10})?([eE][-+]?[0-9]{1,3})?\Z", fullmatch=True)
text = st.text(min_size=0, max_size=80)  # non-ASCII and long strings too


@settings(max_examples=300)
@given(
    symbol=text,
    interval=text,
    times=st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), min_size=4, max_size=4),
    prices=st.lists(st.one_of(decimal, text), min_size=8, max_size=8),
    source=st.sampled_from(SOURCES),
)
def test_any_kline_equals_fastavro(
    symbol: str, interval: str, times: list[int], prices: list[str], source: Any
) -> None:
    o, h, lo, c, v, q, tb, tq = prices
    ot, ct, trades, ingested = times
    k = Kline(symbol, interval, ot, ct, o, h, lo, c, v, q, trades, tb, tq, source, ingested)
    assert CODEC.encode(k) == reference(k)
    assert CODEC.decode(CODEC.encode(k)) == k


def test_a_kline_outside_the_plain_shape_takes_the_generic_writer() -> None:
    encoder = kline_encoder(CODEC)
    assert encoder is not None
    k = make_kline(open_time=T0)
    as_bool = Kline(*[cast(Any, True) if f == "trades" else getattr(k, f) for f in Kline.__slots__])
    assert encoder.encode(as_bool) == reference(as_bool)  # fastavro writes True as 1
    bad_source = Kline(
        *[cast(Any, "x") if f == "source" else getattr(k, f) for f in Kline.__slots__]
    )
    with pytest.raises(ValueError):
        encoder.encode(bad_source)
    not_text = Kline(*[cast(Any, 7) if f == "open" else getattr(k, f) for f in Kline.__slots__])
    with pytest.raises((TypeError, ValueError)):
        encoder.encode(not_text)


def csv_row(i: int, rng: random.Random) -> str:
    t = T0 + i * 60_000

    def price() -> str:
        return f"{rng.randint(0, 10**7)}.{rng.randint(0, 99):02d}"

    exp = rng.choice(["", "e5", "E-3", "e+12"])
    trades = rng.choice([0, 1, 63, 64, 8191, 8192, 123_456_789, 10**17])
    return (
        f"{t},{price()},{price()},-{price()},{price()},{rng.randint(0, 999)}{exp},"
        f"{t + 59_999},{price()},{trades},0.{'9' * rng.randint(1, 70)},{price()},0"
    )


def test_archive_rows_encode_like_fastavro_for_many_rows() -> None:
    rng = random.Random(7)
    body = "\n".join(csv_row(i, rng) for i in range(3000)) + "\n"
    for text_ in (body, HEADER + "\n" + body, body.replace("\n", "\r\n"), body.rstrip("\n")):
        data = text_.encode()
        klines = parse_csv(data, "BTCUSDT", "1m", T0 + 5, "x.csv")
        got = parse_csv_encoded(data, "BTCUSDT", "1m", T0 + 5, CODEC, "x.csv")
        assert got.values == [reference(k) for k in klines]
        assert got.open_times == [k.open_time for k in klines]
        assert got.close_times == [k.close_time for k in klines]


SLOW_PATH_FILES = [
    f"{HEADER}\n\n{T0},1,2,0.5,1,3,{T0 + 59_999},4,5,1,2,0\n",  # blank line
    f" {T0} ,1,2,0.5,1,3,{T0 + 59_999},4,5,1,2,0\n",  # whitespace around a column
    f"{T0 * 1000},1,2,0.5,1,3,{T0 * 1000 + 59_999_999},4,5,1,2,0\n",  # µs times
    f"{T0},1,2,0.5,1,3,{T0 + 59_999},4,5,1,2\n",  # 11 columns
    f"{T0},1,2,0.5,1,3,{T0 + 59_999},4,5,1,2,a b \t\n",  # free text in "ignore"
    f"{T0},1,2,0.5,1,3,{T0 + 59_999},4,1{'0' * 18},1,2,0\n",  # trades beyond 18 digits
    f"{T0},{'1' * 9000},2,0.5,1,3,{T0 + 59_999},4,5,1,2,0\n",  # a very long decimal
]


@pytest.mark.parametrize("text_", SLOW_PATH_FILES)
def test_files_outside_the_fast_form_give_what_parse_csv_gives(text_: str) -> None:
    data = text_.encode()
    klines = parse_csv(data, "BTCUSDT", "1m", 1, "x.csv")
    got = parse_csv_encoded(data, "BTCUSDT", "1m", 1, CODEC, "x.csv")
    assert got.values == [reference(k) for k in klines]
    assert got.open_times == [k.open_time for k in klines]


BAD_FILES = [
    f"{T0},1,2,0.5,1,3,{T0 + 59_999},4,5,1,2,0\n{T0 + 60_000},1,x,0.5,1,3,{T0},4,5,1,2,0\n",
    f"{T0},1,2,0.5,1,3,{T0 + 59_999},4,5,1,2,0\n{T0},1,2,0.5,1,3,{T0 + 59_999},4,5,1,2,0\n",
    f"{T0},1,2,0.5,1,3,{T0 + 59_999},4,5,1,2,0\n1,2,3\n",
    f"{T0},1,2,0.5,1,3,{T0 + 59_999},4,5,1,2,0\n{T0 + 60_000},1,2,0.5,1,3,{T0},4,5,1,2,0,9\n",
    f"{CSV_HEADER_START}\x0b{T0},1,2\n{T0},1,2,0.5,1,3,{T0 + 59_999},4,5,1,2,0\n",
    f"{T0},1,2,0.5,1,3,{T0 + 59_999},4,5,1,2,0\n{T0 + 60_000},1,2,0.5,1,3,{T0},4,5,1,2,é\n",
    f"{T0},1,2,0.5,1,3,{T0 + 59_999},4,{'9' * 5000},1,2,0\n",
]


@pytest.mark.parametrize("text_", BAD_FILES)
def test_bad_files_fail_with_the_same_error(text_: str) -> None:
    data = text_.encode()
    with pytest.raises(ArchiveError) as expected:
        parse_csv(data, "BTCUSDT", "1m", 1, "x.csv")
    with pytest.raises(ArchiveError) as got:
        parse_csv_encoded(data, "BTCUSDT", "1m", 1, CODEC, "x.csv")
    assert str(got.value) == str(expected.value)


def test_a_count_beyond_a_long_is_an_archive_error_not_a_crash_at_publish() -> None:
    # parse_csv accepts it (an int), but no Avro long holds it: the generic writer would raise
    # OverflowError when publishing; the archive path names the file instead (REST fallback).
    data = f"{T0},1,2,0.5,1,3,{T0 + 59_999},4,{2**63},1,2,0\n".encode()
    assert parse_csv(data, "BTCUSDT", "1m", 1, "x.csv")[0].trades == 2**63
    with pytest.raises(ArchiveError, match="x.csv.*number out of range"):
        parse_csv_encoded(data, "BTCUSDT", "1m", 1, CODEC, "x.csv")


@settings(max_examples=200)
@given(st.lists(st.sampled_from([*SLOW_PATH_FILES, *BAD_FILES, "\n", "\r", " ", ","]), max_size=4))
def test_any_mix_of_lines_is_accepted_or_rejected_as_parse_csv_does(parts: list[str]) -> None:
    data = "".join(parts).encode()
    try:
        klines = parse_csv(data, "BTCUSDT", "1m", 1, "x.csv")
    except ArchiveError as exc:
        with pytest.raises(ArchiveError) as got:
            parse_csv_encoded(data, "BTCUSDT", "1m", 1, CODEC, "x.csv")
        assert str(got.value) == str(exc)
        return
    got_rows = parse_csv_encoded(data, "BTCUSDT", "1m", 1, CODEC, "x.csv")
    assert got_rows.values == [reference(k) for k in klines]
