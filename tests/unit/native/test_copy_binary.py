"""The compiled COPY text → binary COPY conversion against a reference written here from
PostgreSQL's binary format (int16 field count; per field int32 length and big-endian value;
timestamps as microseconds since 2000-01-01): the same bytes for every line the sink stages,
None for anything else (the text then goes as it is), and the comparison fails when altered."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qryptify.errors import InvalidKline
from qryptify.kline import Kline
from qryptify.sink.batch import check_kline
from qryptify.sink.rows import CandleBatch, copy_binary, kline_line
from tests.conftest import T0, make_kline
from tests.unit.qryptify.test_sink_batch import _any_kline as any_kline

PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
KINDS = "tssdddddtdidd"  # qryptify.db.CANDLE_COLUMNS: time, text, double, bigint


def reference(text: bytes) -> bytes:
    out = b""
    for line in text.split(b"\n")[:-1]:
        fields = line.split(b"\t")
        assert len(fields) == 13
        out += struct.pack("!h", 13)
        for kind, field in zip(KINDS, fields, strict=True):
            if kind == "t":
                at = datetime.fromisoformat(field.decode() + ":00")
                delta = at - PG_EPOCH
                us = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
                out += struct.pack("!iq", 8, us)
            elif kind == "s":
                out += struct.pack("!i", len(field)) + field
            elif kind == "d":
                out += struct.pack("!id", 8, float(field))
            else:
                out += struct.pack("!iq", 8, int(field))
    return out


_decimal = st.from_regex(r"[0-9]{1,20}(\.[0-9]{1,20})?([eE][-+]?[0-9]{1,3})?", fullmatch=True)


@st.composite
def staged_klines(draw: st.DrawFn) -> Kline:
    """Candles as the exact path stages them: any decimal spelling check_kline takes."""
    prices = sorted(draw(st.lists(_decimal, min_size=4, max_size=4)), key=float)
    low, a, b, high = prices
    return make_kline(
        draw(st.sampled_from(["BTCUSDT", "ETHUSDT", "1000PEPEUSDT"])),
        draw(st.sampled_from(["1m", "1M", "1w"])),
        draw(st.sampled_from([T0, 1_262_304_000_000, 7_258_118_400_000 - 60_000])),
        open=a, high=high, low=low, close=b, volume=draw(_decimal),
        quote_volume=draw(_decimal), taker_buy_base=draw(_decimal),
        taker_buy_quote=draw(_decimal), trades=draw(st.integers(0, 2**63 - 1)),
    )  # fmt: skip


def _staged(ks: list[Kline]) -> bytes:
    good = []
    for k in ks:
        try:
            good.append(check_kline(k))
        except (InvalidKline, ValueError):
            continue
    return CandleBatch.from_klines(good).copy_text()


@given(st.lists(staged_klines() | any_kline, min_size=1, max_size=20))
def test_binary_rows_equal_the_reference_for_every_staged_line(ks: list[Kline]) -> None:
    text = _staged(ks)
    converted = copy_binary(text)
    if not text:
        assert converted is None
        return
    # The exact path's lines: all converted (an underflowing or infinite value never gets
    # here: check_kline sends it to the DLQ).
    assert converted == reference(text)


@given(st.binary(max_size=200), st.integers(0, 300), st.data())
def test_damaged_lines_are_refused_or_converted_exactly(
    junk: bytes, at: int, data: st.DataObject
) -> None:
    line = kline_line(make_kline())
    i = at % len(line)
    damaged = data.draw(st.sampled_from([line[:i] + junk + line[i:], line[:i] + line[i + 1 :],
                                         line.replace(b"\t", junk[:1] or b" ", 1)]))  # fmt: skip
    converted = copy_binary(damaged)
    if converted is not None:
        assert converted == reference(damaged)


@pytest.mark.parametrize(
    "change",
    [
        {"open": "NaN"},
        {"high": "1e400"},  # infinite as DOUBLE PRECISION
        {"low": "1e-400"},  # a non-zero value that rounds to 0: PostgreSQL refuses it
        {"volume": "+1"},
        {"volume": "1."},
        {"symbol": "BTC\\USDT"},  # an escape in text COPY
        {"symbol": "BTC\rUSDT"},
        {"symbol": ""},
    ],
)
def test_lines_outside_the_staged_shape_go_as_text(change: dict[str, str]) -> None:
    k = make_kline()
    line = kline_line(Kline(**{**{f: getattr(k, f) for f in k.__dataclass_fields__}, **change}))
    assert copy_binary(line) is None
    assert copy_binary(kline_line(k)) is not None


def test_not_a_date_and_a_missing_newline_go_as_text() -> None:
    line = kline_line(make_kline())
    assert copy_binary(line.replace(line[:10], b"2024-02-30", 1)) is None
    assert copy_binary(line[:-1]) is None
    assert copy_binary(line + line.replace(b"\n", b"\t1\n")) is None


def test_the_comparison_fails_when_the_conversion_is_altered() -> None:
    text = kline_line(make_kline(open="42000.5"))
    converted = copy_binary(text)
    assert converted is not None and converted == reference(text)
    altered = converted.replace(struct.pack("!d", 42000.5), struct.pack("!d", 42000.25))
    assert altered != converted
    with pytest.raises(AssertionError):
        assert altered == reference(text)
