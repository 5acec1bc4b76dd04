"""The compiled REST klines page → Avro step against its Python twin (``json.loads`` +
``parse_klines`` + the closed-by-exchange-clock filter + ``KlineEncoder.encode``): the same
candles, byte-identical values, the same errors for pages either side gives back to the
Python path; and the comparison can fail on either side."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qryptify import native
from qryptify.avro import KlineCodec, kline_encoder
from qryptify.binance import rest
from qryptify.binance.rest import page_values
from qryptify.pairs import Pair

CODEC = KlineCodec()
ENCODER = kline_encoder(CODEC)
PAIR = Pair("BTCUSDT", "1m")
T0 = 1_704_067_200_000
INGESTED = T0 + 10 * 60_000

_plain_dec = st.from_regex(r"-?[0-9]{1,12}(\.[0-9]{1,8})?([eE][-+]?[0-9]{1,3})?", fullmatch=True)
_dec = _plain_dec | st.sampled_from(["1", "0.1", "-3", "1e5", "2.5E-3", "007", "1.", ".5", ""])
_odd: st.SearchStrategy[Any] = st.sampled_from(
    [None, 1.5, True, [], {}, "x", "1 ", "é", "\\u0031", 10**20, -5]
)


@st.composite
def pages(draw: st.DrawFn) -> bytes:
    """Pages of plain rows (half of them), or with rows of every other shape mixed in."""
    plain = draw(st.booleans())
    dec = _plain_dec if plain else _dec
    rows: list[list[Any]] = []
    for i in range(draw(st.integers(0, 8))):
        t = T0 + 60_000 * (i if plain else draw(st.sampled_from([i, i, i, i - 1])))
        row: list[Any] = [t, *(draw(dec) for _ in range(5)), t + 59_999, draw(dec),
                          draw(st.integers(0, 10**6)), draw(dec), draw(dec)]  # fmt: skip
        if draw(st.booleans()):
            row.append("0" if plain else draw(st.sampled_from(["0", "", "x", 0])))
        damage = "none" if plain else draw(st.sampled_from(["none", "odd", "drop", "extra"]))
        if damage == "odd":
            row[draw(st.integers(0, 10))] = draw(_odd)
        elif damage == "drop":
            del row[draw(st.integers(0, 10))]
        elif damage == "extra":
            row += ["0", "0"]
        rows.append(row)
    separators = draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,", ":")]))
    text = json.dumps(rows, separators=separators)
    if draw(st.booleans()):
        text = (
            draw(st.sampled_from(["", " ", "\n", "\t"]))
            + text
            + draw(st.sampled_from(["", " ", "\r\n"] if plain else ["x", "]", "0"]))
        )
    return text.encode()


@st.composite
def damaged_pages(draw: st.DrawFn) -> bytes:
    body = bytearray(draw(pages()))
    how = draw(st.sampled_from(["cut", "flip", "insert"]))
    if not body:
        return bytes(body)
    at = draw(st.integers(0, len(body) - 1))
    if how == "cut":
        return bytes(body[:at])
    if how == "flip":
        body[at] ^= 1 << draw(st.integers(0, 7))
        return bytes(body)
    return bytes(body[:at] + draw(st.binary(min_size=1, max_size=3)) + body[at:])


def _result(
    body: bytes, now_ms: int, native_ok: bool, within: tuple[int, int] | None = None
) -> Any:
    assert ENCODER is not None
    try:
        rows = page_values(PAIR, body, INGESTED, now_ms, CODEC, within=within, native_ok=native_ok)
    except Exception as exc:  # noqa: BLE001 - any verdict, compared as a value
        return ("error", type(exc).__name__, str(exc))
    return rows.symbol, rows.interval, rows.open_times, rows.close_times, rows.values


_now = st.sampled_from([T0, T0 + 60_000, T0 + 3 * 60_000 - 1, T0 + 3 * 60_000, T0 + 10**9])
#: The range the page was asked for (None: not checked); the middle ones cut generated pages.
_within = st.sampled_from(
    [None, (T0, T0 + 10**9), (T0 + 60_000, T0 + 10**9), (T0 - 60_000, T0 + 2 * 60_000)]
)


@given(pages(), _now, _within)
def test_native_rest_page_equals_the_python_twin(
    body: bytes, now_ms: int, within: tuple[int, int] | None
) -> None:
    assert _result(body, now_ms, True, within) == _result(body, now_ms, False, within)


@given(damaged_pages(), _now, _within)
def test_native_rest_page_on_damaged_pages(
    body: bytes, now_ms: int, within: tuple[int, int] | None
) -> None:
    assert _result(body, now_ms, True, within) == _result(body, now_ms, False, within)


@given(st.binary(max_size=300), _now, _within)
def test_native_rest_page_on_arbitrary_bytes(
    body: bytes, now_ms: int, within: tuple[int, int] | None
) -> None:
    assert _result(body, now_ms, True, within) == _result(body, now_ms, False, within)


def _plain_page() -> bytes:
    rows = [
        [
            T0 + 60_000 * i,
            "1.5",
            "2",
            "1",
            "1.5",
            "10",
            T0 + 60_000 * i + 59_999,
            "15",
            3,
            "5",
            "7.5",
            "0",
        ]  # fmt: skip
        for i in range(3)
    ]
    return json.dumps(rows).encode()


def test_a_plain_page_takes_the_native_path_and_keeps_only_closed_candles() -> None:
    assert native.MODULE is not None and ENCODER is not None
    head, tail = ENCODER.row_frame("BTCUSDT", "1m", "rest", INGESTED)
    now = T0 + 2 * 60_000 + 59_999  # the third candle's last millisecond: still open
    found = native.MODULE.rest_page_values(_plain_page(), head, tail, now)
    assert found is not None
    opens, closes, values = found
    assert opens == [T0, T0 + 60_000]
    assert closes == [T0 + 59_999, T0 + 119_999]
    # The values against the generic codec: test_rest.py, on both cores.
    assert len(values) == 2


def test_the_comparison_fails_when_the_native_output_is_altered(monkeypatch: Any) -> None:
    body, now = _plain_page(), T0 + 10**9
    assert _result(body, now, True) == _result(body, now, False)
    real = native.MODULE

    class Altered:
        def rest_page_values(self, *args: Any) -> Any:
            opens, closes, values = real.rest_page_values(*args)  # type: ignore[union-attr]
            return opens, closes, [v[:-1] + b"\x02" for v in values]

    monkeypatch.setattr(native, "MODULE", Altered())
    with pytest.raises(AssertionError):
        assert _result(body, now, True) == _result(body, now, False)


def test_the_comparison_fails_when_the_python_path_is_altered(monkeypatch: Any) -> None:
    body, now = _plain_page(), T0 + 10**9
    real = rest.parse_klines
    monkeypatch.setattr(rest, "parse_klines", lambda pair, decoded, at: real(pair, decoded, at + 1))
    with pytest.raises(AssertionError):
        assert _result(body, now, True) == _result(body, now, False)
