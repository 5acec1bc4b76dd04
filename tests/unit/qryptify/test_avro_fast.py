"""The specialised Kline reader gives exactly what fastavro gives, and fails where it fails."""

from __future__ import annotations

from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qryptify.avro import KLINE, KlineCodec, decode_kline_body
from qryptify.errors import UndecodableRecord
from qryptify.kline import Kline

CODEC = KlineCodec()
GENERIC = KlineCodec()
GENERIC._fast_prefix = None  # the fastavro path

longs = st.integers(min_value=-(2**63), max_value=2**63 - 1)
texts = st.text(max_size=80)

klines = st.builds(
    Kline,
    symbol=texts,
    interval=texts,
    open_time=longs,
    close_time=longs,
    open=texts,
    high=texts,
    low=texts,
    close=texts,
    volume=texts,
    quote_volume=st.text(max_size=300),
    trades=longs,
    taker_buy_base=texts,
    taker_buy_quote=texts,
    source=st.sampled_from(["rest", "ws", "archive"]),
    ingested_at=longs,
)


def test_the_fast_path_is_active_for_the_current_schema() -> None:
    assert CODEC._fast_prefix is not None
    assert CODEC._fast_prefix[2:] == CODEC.avro.catalogue.current[KLINE].fingerprint


@settings(max_examples=300)
@given(klines)
def test_fast_reader_matches_fastavro(k: Kline) -> None:
    data = CODEC.encode(k)
    assert decode_kline_body(data, 10) == GENERIC.decode(data) == k


@settings(max_examples=300)
@given(klines, st.data())
def test_fast_reader_rejects_what_fastavro_rejects(k: Kline, data: st.DataObject) -> None:
    good = CODEC.encode(k)
    cut = data.draw(st.integers(min_value=10, max_value=len(good) - 1))
    mangled = good[:cut]
    if data.draw(st.booleans()):
        mangled += data.draw(st.binary(min_size=1, max_size=20))
    try:
        expected: Kline | None = GENERIC.decode(mangled)  # type: ignore[assignment]
    except UndecodableRecord:
        expected = None
    try:
        ours = CODEC.decode(mangled)
    except UndecodableRecord as exc:
        # Stricter than fastavro only on varints (fastavro wraps longs past 64 bits and reads
        # varints past 10 bytes) and on negative enum indexes (fastavro indexes the symbol
        # list with them, Python-style: -1 reads as the last symbol).
        stricter = ("long out of range", "varint", "enum index -")
        assert expected is None or any(s in str(exc) for s in stricter)
    else:
        assert ours == expected  # never accepts what fastavro rejects, never reads otherwise


def test_a_negative_enum_index_is_undecodable_where_fastavro_wraps_it() -> None:
    good = CODEC.encode(Kline("BTCUSDT", "1m", 0, 59_999, "1", "1", "1", "1", "0", "0", 0, "0",
                              "0", "rest", 0))  # fmt: skip
    # The source enum is the second-to-last field; its index 0 (rest) is the byte 0x00 just
    # before ingested_at's single varint byte 0x00. zigzag(-1) is 0x01.
    assert good[-2:] == b"\x00\x00"
    mangled = good[:-2] + b"\x01\x00"
    assert cast(Kline, GENERIC.decode(mangled)).source == "archive"  # fastavro: symbols[-1]
    with pytest.raises(UndecodableRecord, match="enum index -1"):
        CODEC.decode(mangled)


def test_trailing_bytes_and_bad_enum_are_undecodable() -> None:
    data = CODEC.encode(Kline("BTCUSDT", "1m", 0, 59_999, "1", "1", "1", "1", "0", "0", 0, "0",
                              "0", "ws", 0))  # fmt: skip
    with pytest.raises(UndecodableRecord, match="trailing"):
        CODEC.decode(data + b"\x00")
    source_at = len(data) - 2  # enum index, then ingested_at (0 = one byte)
    with pytest.raises(UndecodableRecord, match="enum"):
        CODEC.decode(data[:source_at] + b"\x06" + data[source_at + 1 :])
