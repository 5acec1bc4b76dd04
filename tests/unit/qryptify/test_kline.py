from __future__ import annotations

import ast
from collections.abc import Callable
from typing import Any

import pytest

from qryptify.errors import InvalidKline, MalformedPayload
from qryptify.kline import Kline, closed_at, closed_klines, latest_per_key, validate_kline
from tests.conftest import T0, make_kline
from tests.support.source import places_outside

# Binance's documented REST row (a 1w candle) and real 5m rows (see reference §1.1, §7).
DOC_ROW = [1499040000000, "0.01634790", "0.80000000", "0.01575800", "0.01577100",
           "148976.11427815", 1499644799999, "2434.19055334", 308, "1756.87402397",
           "28.46694368", "17928899.62484339"]  # fmt: skip

DOC_WS: dict[str, Any] = {
    "e": "kline", "E": 1638747660000, "s": "BTCUSDT",
    "k": {"t": 1638747660000, "T": 1638747719999, "s": "BTCUSDT", "i": "1m", "f": 100,
          "L": 200, "o": "0.0010", "c": "0.0020", "h": "0.0025", "l": "0.0015", "v": "1000",
          "n": 100, "x": False, "q": "1.0000", "V": "500", "Q": "0.500", "B": "123456"},
}  # fmt: skip


def test_rest_row_keeps_exchange_strings() -> None:
    k = Kline.from_rest_row("BTCUSDT", "1w", DOC_ROW, ingested_at=1)
    assert (k.open_time, k.close_time, k.trades) == (1499040000000, 1499644799999, 308)
    assert (k.open, k.high, k.low, k.close) == (
        "0.01634790",
        "0.80000000",
        "0.01575800",
        "0.01577100",
    )
    assert k.volume == "148976.11427815" and k.taker_buy_quote == "28.46694368"
    validate_kline(k)


def test_ws_event_parses_doc_example() -> None:
    k = Kline.from_ws(DOC_WS, ingested_at=5)
    assert (k.symbol, k.interval, k.open_time, k.close_time) == (
        "BTCUSDT",
        "1m",
        1638747660000,
        1638747719999,
    )
    assert (k.open, k.close, k.high, k.low, k.trades) == (
        "0.0010",
        "0.0020",
        "0.0025",
        "0.0015",
        100,
    )
    assert k.source == "ws"


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda k: k.pop("o"), "'o' missing"),
        (lambda k: k.update(t="1638747660000"), "t must be an integer"),
        (lambda k: k.update(c=0.002), "c must be a decimal string"),
        (lambda k: k.update(i="2m"), "unknown interval"),
        (lambda k: k.update(n=True), "n must be an integer"),
    ],
)
def test_ws_event_bad_fields(mutate: Callable[[dict[str, Any]], object], fragment: str) -> None:
    payload = {**DOC_WS, "k": dict(DOC_WS["k"])}
    mutate(payload["k"])
    with pytest.raises(MalformedPayload, match=fragment):
        Kline.from_ws(payload, ingested_at=0)


def test_rest_row_wrong_types() -> None:
    row = list(DOC_ROW)
    row[1] = 0.0163
    with pytest.raises(MalformedPayload, match="open must be a decimal string"):
        Kline.from_rest_row("BTCUSDT", "1w", row, 0)
    with pytest.raises(MalformedPayload, match="list of 12"):
        Kline.from_rest_row("BTCUSDT", "1w", {"t": 1}, 0)


def test_closed_rule_uses_exchange_now() -> None:
    ks = [make_kline(open_time=T0), make_kline(open_time=T0 + 60_000)]
    # close_time of the second is T0+119_999: closed only once exchange now is past it.
    assert closed_klines(ks, T0 + 119_999) == ks[:1]
    assert closed_klines(ks, T0 + 120_000) == ks
    assert not closed_at(T0 + 59_999, T0 + 59_999)  # its last millisecond is still "now"
    assert closed_at(T0 + 59_999, T0 + 60_000)
    assert ks[0].is_closed(T0 + 60_000) and not ks[1].is_closed(T0 + 60_000)


def _compares_close_time(node: ast.Compare) -> bool:
    operands = [node.left, *node.comparators]
    return any(
        (isinstance(o, ast.Attribute) and o.attr in ("close_time", "close_times"))
        or (isinstance(o, ast.Name) and o.id == "close_time")
        for o in operands
    ) and any(isinstance(op, ast.Lt | ast.LtE | ast.Gt | ast.GtE) for op in node.ops)


def test_the_closed_rule_is_written_once() -> None:
    # Everyone asks kline.closed_at / Kline.is_closed / closed_klines; an inline
    # ``close_time < now`` elsewhere is a second copy of invariant 1 that can drift.
    inline = places_outside(
        "qryptify/kline.py", lambda n: isinstance(n, ast.Compare) and _compares_close_time(n)
    )
    assert inline == []


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"low": "42050.0"}, "OHLC violates"),
        ({"high": "41950.0"}, "OHLC violates"),
        ({"volume": "-1"}, "negative"),
        ({"close_time": T0 + 60_000}, "close_time"),
        ({"interval": "2m", "close_time": T0 + 119_999}, "unknown interval"),
    ],
)
def test_validate_rejects(overrides: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidKline, match=fragment):
        validate_kline(make_kline(**overrides))


def test_latest_per_key_keeps_highest_offset() -> None:
    a = make_kline(close="1.0")
    b = make_kline(close="2.0")
    c = make_kline(open_time=T0 + 60_000)
    assert sorted(latest_per_key([(7, b), (3, a), (9, c)]), key=lambda k: k.open_time) == [b, c]
    assert latest_per_key([(3, a), (7, b)]) == [b]
