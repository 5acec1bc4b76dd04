"""WebSocket formats and control messages, as pure functions."""

from __future__ import annotations

import json

import pytest

from sim.bars import Bar
from sim.streams import (
    corrected_bar,
    handle_control,
    kline_event,
    malformed,
    parse_kline_stream,
    wrap_combined,
)
from sim.symbols import DEFAULT_SYMBOLS
from sim.wire import Formatters

BTC = next(s for s in DEFAULT_SYMBOLS if s.symbol == "BTCUSDT")
BAR = Bar(
    5721269,
    5731500,
    5719619,
    5730000,
    496263,
    2842551478940,
    7160,
    273108,
    1564262369718,
    100,
    7259,
)
# The official example's field order (binance-api.md §3).
K_FIELDS = ["t", "T", "s", "i", "f", "L", "o", "c", "h", "l", "v", "n", "x", "q", "V", "Q", "B"]


def test_stream_names() -> None:
    assert parse_kline_stream("btcusdt@kline_1m") == ("BTCUSDT", "1m")
    assert parse_kline_stream("btcusdt@kline_1M") == ("BTCUSDT", "1M")
    assert parse_kline_stream("1000pepeusdt@kline_4h") == ("1000PEPEUSDT", "4h")
    for bad in ("BTCUSDT@kline_1m", "btcusdt@kline_2m", "btcusdt@aggTrade", "btcusdt@kline_"):
        assert parse_kline_stream(bad) is None


def test_kline_event_matches_the_documented_layout() -> None:
    text = kline_event(
        BTC, "5m", 1616338800000, BAR, False, 1616338801234, Formatters.for_symbol(BTC)
    )
    event = json.loads(text)
    assert list(event) == ["e", "E", "s", "k"]
    assert event["e"] == "kline" and event["E"] == 1616338801234 and event["s"] == "BTCUSDT"
    k = event["k"]
    assert list(k) == K_FIELDS
    assert k["t"] == 1616338800000 and k["T"] == 1616339099999
    assert (k["o"], k["h"], k["l"], k["c"]) == ("57212.69", "57315.00", "57196.19", "57300.00")
    assert (k["v"], k["q"], k["n"], k["B"], k["x"]) == (
        "496.263",
        "28425514.78940",
        7160,
        "0",
        False,
    )
    assert k["L"] - k["f"] + 1 == k["n"]
    for name in ("t", "T", "f", "L", "n"):
        assert type(k[name]) is int
    for name in ("s", "i", "o", "c", "h", "l", "v", "q", "V", "Q", "B"):
        assert type(k[name]) is str
    wrapped = json.loads(wrap_combined("btcusdt@kline_5m", text))
    assert list(wrapped) == ["stream", "data"] and wrapped["data"] == event


@pytest.mark.parametrize("kind", ["bad_json", "missing_field", "wrong_type", "bad_ohlc"])
def test_malformed_frames_are_broken_the_promised_way(kind: str) -> None:
    text = kline_event(BTC, "1m", 0, BAR, True, 1, Formatters.for_symbol(BTC))
    broken = malformed(text, kind)
    if kind == "bad_json":
        with pytest.raises(json.JSONDecodeError):
            json.loads(broken)
        return
    k = json.loads(broken)["k"]
    if kind == "missing_field":
        assert "c" not in k
    elif kind == "wrong_type":
        assert isinstance(k["t"], str) and isinstance(k["o"], float)
    else:
        assert float(k["h"]) < float(k["l"])


def test_bad_ohlc_even_for_a_flat_candle() -> None:
    flat = Bar(100, 100, 100, 100, 0, 0, 0, 0, 0, 5, 4)
    k = json.loads(
        malformed(kline_event(BTC, "1m", 0, flat, True, 1, Formatters.for_symbol(BTC)), "bad_ohlc")
    )["k"]
    assert float(k["h"]) < float(k["l"])


def test_corrected_bar_differs_but_stays_valid() -> None:
    c = corrected_bar(BAR)
    assert c != BAR and c.low <= c.close <= c.high and c.volume == BAR.volume + 1


def test_control_messages_follow_the_live_subscribing_doc() -> None:
    r = handle_control(
        '{"method":"SUBSCRIBE","params":["btcusdt@kline_1m","ethusdt@kline_1h"],"id":1}',
        (),
        True,
        200,
    )
    assert json.loads(r.reply) == {"result": None, "id": 1}
    assert r.streams == ("btcusdt@kline_1m", "ethusdt@kline_1h")
    r = handle_control('{"method":"LIST_SUBSCRIPTIONS","id":3}', r.streams, True, 200)
    assert json.loads(r.reply) == {"result": ["btcusdt@kline_1m", "ethusdt@kline_1h"], "id": 3}
    r = handle_control(
        '{"method":"UNSUBSCRIBE","params":["btcusdt@kline_1m"],"id":312}', r.streams, True, 200
    )
    assert json.loads(r.reply) == {"result": None, "id": 312} and r.streams == ("ethusdt@kline_1h",)
    r = handle_control(
        '{"method":"SET_PROPERTY","params":["combined",false],"id":5}', r.streams, True, 200
    )
    assert json.loads(r.reply) == {"result": None, "id": 5} and r.combined is False
    r = handle_control(
        '{"method":"GET_PROPERTY","params":["combined"],"id":2}', r.streams, r.combined, 200
    )
    assert json.loads(r.reply) == {"result": False, "id": 2}


@pytest.mark.parametrize(
    ("text", "code", "msg"),
    [
        ("{nope", 3, "Invalid JSON"),
        ('{"method":"SUBSCRIBE","params":[]}', 2, "request ID must be an unsigned integer"),
        ('{"method":"SUBSCRIBE","params":[],"id":-1}', 2, "request ID must be an unsigned integer"),
        ('{"params":[],"id":1}', 2, "missing field `method`"),
        ('{"method":"NOPE","id":1}', 2, "unknown variant `NOPE`"),
        ('{"method":"GET_PROPERTY","params":["size"],"id":1}', 0, "Unknown property"),
        ('{"method":"SET_PROPERTY","params":["combined","yes"],"id":1}', 1, "expected Boolean"),
        ('{"method":"GET_PROPERTY","params":[1],"id":1}', 2, "property name must be a string"),
    ],
)
def test_control_errors(text: str, code: int, msg: str) -> None:
    r = handle_control(text, ("a",), True, 200)
    body = json.loads(r.reply)
    assert body["code"] == code and msg in body["msg"]
    assert r.streams == ("a",)


def test_subscribing_past_the_cap_is_flagged() -> None:
    streams = tuple(f"s{i}usdt@kline_1m" for i in range(200))
    r = handle_control('{"method":"SUBSCRIBE","params":["x@kline_1m"],"id":9}', streams, True, 200)
    assert r.too_many_streams
    r = handle_control(
        '{"method":"SUBSCRIBE","params":["s1usdt@kline_1m"],"id":9}', streams, True, 200
    )
    assert not r.too_many_streams and len(r.streams) == 200
