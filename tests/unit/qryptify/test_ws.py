"""qryptify.binance.ws: URLs (incl. the 2026 legacy rewrite), planning, frame parsing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from qryptify.binance import ws
from qryptify.binance.ws import (
    ConnectPacer,
    ControlReply,
    KlineFrame,
    Malformed,
    parse_frame,
    plan_connections,
    stream_url,
)
from qryptify.config import build_config
from qryptify.pairs import Pair
from qryptify.retry import backoff
from sim.bars import Bar
from sim.streams import kline_event, wrap_combined
from sim.symbols import DEFAULT_SYMBOLS
from sim.wire import Formatters

# The official example of the Kline/Candlestick stream ([KS]), comments removed.
DOC_EXAMPLE: dict[str, Any] = {
    "e": "kline",
    "E": 1638747660000,
    "s": "BTCUSDT",
    "k": {
        "t": 1638747660000,
        "T": 1638747719999,
        "s": "BTCUSDT",
        "i": "1m",
        "f": 100,
        "L": 200,
        "o": "0.0010",
        "c": "0.0020",
        "h": "0.0025",
        "l": "0.0015",
        "v": "1000",
        "n": 100,
        "x": False,
        "q": "1.0000",
        "V": "500",
        "Q": "0.500",
        "B": "123456",
    },
}
# A real closing frame recorded from fstream ([CF] line 938).
REAL_CLOSE = (
    '{"stream":"sushiusdt@kline_1m","data":{"e":"kline","E":1626992760203,"s":"SUSHIUSDT",'
    '"k":{"t":1626992700000,"T":1626992759999,"s":"SUSHIUSDT","i":"1m","f":126902874,'
    '"L":126902986,"o":"7.6080","c":"7.6170","h":"7.6180","l":"7.6070","v":"3005","n":113,'
    '"x":true,"q":"22875.8590","V":"1900","Q":"14464.6960","B":"0"}}}'
)
INGESTED = 1_700_000_000_000
BTC_SPEC = next(spec for spec in DEFAULT_SYMBOLS if spec.symbol == "BTCUSDT")


def combined(data: dict[str, Any], stream: str = "btcusdt@kline_1m") -> str:
    return json.dumps({"stream": stream, "data": data})


def closed_example(**k_overrides: Any) -> dict[str, Any]:
    """The doc example, closed, with its low fixed: the documented sample's open (0.0010) is
    below its low (0.0015), which no real candle can have."""
    data: dict[str, Any] = json.loads(json.dumps(DOC_EXAMPLE))
    data["k"]["x"] = True
    data["k"]["l"] = "0.0010"
    data["k"].update(k_overrides)
    return data


# -- URLs -----------------------------------------------------------------------------------


def test_stream_url_uses_the_routed_market_path() -> None:
    url = stream_url(
        "wss://fstream.binance.com/market/stream", ["btcusdt@kline_1m", "ethusdt@kline_4h"]
    )
    assert url == (
        "wss://fstream.binance.com/market/stream?streams=btcusdt@kline_1m/ethusdt@kline_4h"
    )


@pytest.mark.parametrize(
    "endpoint",
    [
        "wss://fstream.binance.com/stream",
        "wss://fstream.binance.com/ws",
        "wss://fstream.binance.com",
        "wss://fstream.binance.com/market",
        "wss://fstream.binance.com/stream?streams=old@kline_1m",
    ],
)
def test_legacy_endpoints_are_routed_to_market(endpoint: str) -> None:
    # Since 2026-04-23 unrouted URLs connect but push no kline frames.
    assert stream_url(endpoint, ["btcusdt@kline_1m"]) == (
        "wss://fstream.binance.com/market/stream?streams=btcusdt@kline_1m"
    )


def test_seed_config_legacy_url_is_rewritten_once_with_a_warning() -> None:
    cfg = build_config({"ws": {"endpoint": "wss://fstream.binance.com/stream"}})
    assert cfg.ws.endpoint == "wss://fstream.binance.com/market/stream"
    assert len(cfg.warnings) == 1
    assert "/market" in cfg.warnings[0]
    assert stream_url(cfg.ws.endpoint, ["btcusdt@kline_1m"]).startswith(
        "wss://fstream.binance.com/market/stream?"
    )


def test_simulator_style_endpoint_keeps_host_and_port() -> None:
    url = stream_url("ws://127.0.0.1:40123/stream", ["btcusdt@kline_1m"])
    assert url == "ws://127.0.0.1:40123/market/stream?streams=btcusdt@kline_1m"


@pytest.mark.parametrize("bad", ["BTCUSDT@kline_1m", "a/b", "", "x?y"])
def test_stream_url_rejects_bad_stream_names(bad: str) -> None:
    with pytest.raises(ValueError, match="stream"):
        stream_url("wss://fstream.binance.com", [bad])


def test_stream_url_needs_streams() -> None:
    with pytest.raises(ValueError):
        stream_url("wss://fstream.binance.com", [])


# -- planning -------------------------------------------------------------------------------


def pairs(n: int, interval: str = "1m") -> list[Pair]:
    return [Pair(f"SYM{i:04d}USDT", interval) for i in range(n)]


@pytest.mark.parametrize(
    ("n", "cap", "sizes"),
    [
        (1, 200, [1]),
        (200, 200, [200]),
        (201, 200, [101, 100]),
        (400, 200, [200, 200]),
        (500, 200, [167, 167, 166]),
        (200, 100, [100, 100]),
        (7, 3, [3, 2, 2]),
    ],
)
def test_plan_connections_respects_cap_and_balances(n: int, cap: int, sizes: list[int]) -> None:
    plan = plan_connections(pairs(n), cap)
    assert [len(group) for group in plan] == sizes
    assert all(len(group) <= cap for group in plan)
    flat = [p for group in plan for p in group]
    assert flat == pairs(n)  # every pair exactly once, in order


def test_plan_connections_default_cap_is_200_and_drops_duplicates() -> None:
    ps = pairs(450)
    plan = plan_connections(ps + ps[:10])
    assert max(len(g) for g in plan) <= ws.MAX_STREAMS_PER_CONNECTION == 200
    assert sum(len(g) for g in plan) == 450
    assert plan_connections([]) == []
    with pytest.raises(ValueError):
        plan_connections(ps, 0)


# -- frames ---------------------------------------------------------------------------------


def test_doc_example_open_candle_is_not_a_closed_kline() -> None:
    frame = parse_frame(combined(DOC_EXAMPLE), INGESTED)
    assert frame == KlineFrame("btcusdt@kline_1m", 1638747660000, 1638747660000, False, None)


def test_doc_example_verbatim_fails_the_ohlc_check() -> None:
    # Binance's illustrative sample has open 0.0010 < low 0.0015: caught, not published.
    data = json.loads(json.dumps(DOC_EXAMPLE))
    data["k"]["x"] = True
    frame = parse_frame(combined(data), INGESTED)
    assert isinstance(frame, Malformed) and frame.kind == ws.INVALID_KLINE
    assert "OHLC" in frame.reason


def test_open_candle_fully_parsed_when_asked() -> None:
    data = closed_example(x=False)
    frame = parse_frame(combined(data), INGESTED, closed_only=False)
    assert isinstance(frame, KlineFrame) and frame.kline is not None
    assert not frame.closed
    assert frame.kline.close == "0.0020"


def test_closed_doc_example_becomes_a_validated_kline() -> None:
    frame = parse_frame(combined(closed_example()), INGESTED)
    assert isinstance(frame, KlineFrame)
    assert frame.closed
    k = frame.kline
    assert k is not None
    assert (k.symbol, k.interval, k.open_time, k.close_time) == (
        "BTCUSDT",
        "1m",
        1638747660000,
        1638747719999,
    )
    assert (k.open, k.high, k.low, k.close) == ("0.0010", "0.0025", "0.0010", "0.0020")
    assert (k.volume, k.quote_volume, k.trades) == ("1000", "1.0000", 100)
    assert (k.taker_buy_base, k.taker_buy_quote) == ("500", "0.500")
    assert k.source == "ws" and k.ingested_at == INGESTED


def test_real_recorded_close_frame_parses() -> None:
    frame = parse_frame(REAL_CLOSE, INGESTED)
    assert isinstance(frame, KlineFrame) and frame.kline is not None
    assert frame.stream == "sushiusdt@kline_1m"
    assert frame.event_time == 1626992760203
    assert frame.kline.close == "7.6170"


def test_raw_payload_without_wrapper_is_accepted() -> None:
    frame = parse_frame(json.dumps(closed_example()), INGESTED)
    assert isinstance(frame, KlineFrame) and frame.stream == "btcusdt@kline_1m"


def test_bytes_frames_are_decoded() -> None:
    frame = parse_frame(REAL_CLOSE.encode(), INGESTED)
    assert isinstance(frame, KlineFrame) and frame.closed


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        (b"\xff\xfe", ws.NOT_UTF8),
        (REAL_CLOSE[: len(REAL_CLOSE) // 2], ws.NOT_JSON),  # the simulator's bad_json
        ("[1, 2]", ws.NOT_OBJECT),
        ('{"hello": 1}', ws.UNKNOWN_MESSAGE),
        ('{"stream": "btcusdt@kline_1m"}', ws.UNKNOWN_MESSAGE),
        ('{"data": {"e": "kline"}}', ws.UNKNOWN_MESSAGE),
        (combined({"e": "aggTrade", "E": 1}), ws.UNEXPECTED_EVENT),
        (combined({"e": "kline", "E": 1}), ws.BAD_FIELD),
        (combined({**closed_example(), "E": "1"}), ws.BAD_FIELD),
        (combined(closed_example(x="true")), ws.BAD_FIELD),
        (combined(closed_example(t="1638747660000")), ws.BAD_FIELD),  # wrong_type
        (combined(closed_example(o=0.001)), ws.BAD_FIELD),  # wrong_type (float price)
        (combined(closed_example(c=None)), ws.BAD_FIELD),
        (combined(closed_example(n=True)), ws.BAD_FIELD),
        (combined(closed_example(h="0.0010", l="0.0025")), ws.INVALID_KLINE),  # bad_ohlc
        (combined(closed_example(T=1638747719998)), ws.INVALID_KLINE),  # close-time rule
        (combined(closed_example(v="-1")), ws.INVALID_KLINE),
        (combined(closed_example(i="7m"), stream="btcusdt@kline_7m"), ws.BAD_FIELD),
        (combined(closed_example(), stream="ethusdt@kline_1m"), ws.STREAM_MISMATCH),
    ],
)
def test_malformed_frames_are_classified_never_raised(text: str | bytes, kind: str) -> None:
    frame = parse_frame(text, INGESTED)
    assert isinstance(frame, Malformed), frame
    assert frame.kind == kind
    assert frame.kind in ws.MALFORMED_KINDS
    assert frame.reason


def test_truncated_frame_still_names_its_stream() -> None:
    frame = parse_frame(REAL_CLOSE[:80], INGESTED)
    assert isinstance(frame, Malformed) and frame.kind == ws.NOT_JSON
    assert frame.stream == "sushiusdt@kline_1m"
    other = parse_frame('{"stream": "x', INGESTED)
    assert isinstance(other, Malformed) and other.stream is None


def test_missing_field_is_malformed() -> None:  # the simulator's missing_field kind
    data = closed_example()
    del data["k"]["c"]
    frame = parse_frame(combined(data), INGESTED)
    assert isinstance(frame, Malformed) and frame.kind == ws.BAD_FIELD
    assert "'c'" in frame.reason


def test_open_candle_with_broken_prices_is_only_shape_checked_when_closed_only() -> None:
    data = closed_example(x=False, h="0.0001")
    assert isinstance(parse_frame(combined(data), INGESTED), KlineFrame)
    assert isinstance(parse_frame(combined(data), INGESTED, closed_only=False), Malformed)


# A real snapshot recorded from fstream ([CF] line 902): the exchange's exact layout.
REAL_OPEN = (
    '{"stream":"sushiusdt@kline_1m","data":{"e":"kline","E":1626992759565,"s":"SUSHIUSDT",'
    '"k":{"t":1626992700000,"T":1626992759999,"s":"SUSHIUSDT","i":"1m","f":126902874,'
    '"L":126902986,"o":"7.6080","c":"7.6170","h":"7.6180","l":"7.6070","v":"3005","n":113,'
    '"x":false,"q":"22875.8590","V":"1900","Q":"14464.6960","B":"0"}}}'
)


def decoded_in_full(raw: str) -> ws.Frame:
    """``parse_frame`` with closed_only but without the open-snapshot shortcut."""
    doc = json.loads(raw)
    return ws._kline_event(doc["stream"], doc["data"], INGESTED, True)


def test_open_snapshot_in_the_exchange_layout_is_recognised_without_decoding() -> None:
    frame = ws._open_snapshot(REAL_OPEN)
    assert frame == KlineFrame("sushiusdt@kline_1m", 1626992759565, 1626992700000, False, None)
    assert parse_frame(REAL_OPEN, INGESTED) == frame == decoded_in_full(REAL_OPEN)
    assert parse_frame(REAL_OPEN.encode(), INGESTED) == frame
    # The simulator's frames use the same layout.
    flat = Bar(100, 110, 90, 105, 5, 500, 2, 2, 200, 1, 2)
    sim = wrap_combined(
        "btcusdt@kline_1m",
        kline_event(BTC_SPEC, "1m", 0, flat, False, 7, Formatters.for_symbol(BTC_SPEC)),
    )
    assert ws._open_snapshot(sim) == KlineFrame("btcusdt@kline_1m", 7, 0, False, None)


def test_closed_frames_and_full_checks_never_take_the_shortcut() -> None:
    assert ws._open_snapshot(REAL_CLOSE) is None
    # Asked to check open candles in full, a broken snapshot in the exact layout is caught.
    broken = REAL_OPEN.replace('"h":"7.6180"', '"h":"7.0000"')
    assert isinstance(ws._open_snapshot(broken), KlineFrame)
    frame = parse_frame(broken, INGESTED, closed_only=False)
    assert isinstance(frame, Malformed) and frame.kind == ws.INVALID_KLINE


@pytest.mark.parametrize(
    "raw",
    [
        REAL_OPEN[: len(REAL_OPEN) // 2],  # truncated before x: it may be a close
        REAL_OPEN.replace("}}}", "}}"),  # truncated after x
        REAL_OPEN.replace('"x":false', '"x":false,"x":true'),  # duplicate key: the last wins
        REAL_OPEN.replace('"B":"0"}', '"B":"0","x":true}'),
        REAL_OPEN.replace('"stream":"sushiusdt', '"stream":"ethusdt'),  # stream mismatch
        REAL_OPEN.replace('"E":1626992759565', '"E":"1626992759565"'),  # wrong_type
        REAL_OPEN.replace('"t":1626992700000', '"t":1626992700000.0'),
        REAL_OPEN.replace('"t":1626992700000', '"t":01626992700000'),  # not JSON
        REAL_OPEN.replace('"e":"kline"', '"e":"aggTrade"'),
        REAL_OPEN.replace('"s":"SUSHIUSDT","i"', '"s":"SUSHI\\u0055SDT","i"'),  # an escape
        REAL_OPEN.replace('"c":"7.6170",', ""),  # the simulator's missing_field
        " " + REAL_OPEN,
        REAL_OPEN + "\n",
    ],
)
def test_anything_off_the_exact_layout_is_decoded_in_full(raw: str) -> None:
    assert ws._open_snapshot(raw) is None
    frame = parse_frame(raw, INGESTED)
    try:
        expected = decoded_in_full(raw)
    except ValueError:
        expected = Malformed(ws.NOT_JSON, "")
    assert type(frame) is type(expected)
    if isinstance(frame, Malformed) and isinstance(expected, Malformed):
        assert frame.kind == expected.kind
    else:
        assert frame == expected


def test_every_one_character_edit_of_a_snapshot_parses_as_without_the_shortcut() -> None:
    edits = []
    for i in range(len(REAL_OPEN)):
        edits.append(REAL_OPEN[:i] + REAL_OPEN[i + 1 :])
        for c in '"\\{}:,0-x\x00\u00e9':
            edits.append(REAL_OPEN[:i] + c + REAL_OPEN[i + 1 :])
            edits.append(REAL_OPEN[:i] + c + REAL_OPEN[i:])
    shortcut = 0
    for raw in edits:
        fast = ws._open_snapshot(raw)
        if fast is None:
            continue
        shortcut += 1
        assert fast == decoded_in_full(raw), raw
    assert shortcut > 100  # edits inside prices and ids keep the layout


def test_deep_nesting_is_still_refused() -> None:
    deep = '{"stream":"btcusdt@kline_1m","data":' + "[" * 40 + "]" * 40 + "}"
    frame = parse_frame(deep, INGESTED)
    assert isinstance(frame, Malformed) and frame.kind == ws.NOT_OBJECT
    shallow = '{"stream":"btcusdt@kline_1m","data":' + "[" * 20 + "]" * 20 + "}"
    frame = parse_frame(shallow, INGESTED)
    assert isinstance(frame, Malformed) and frame.kind == ws.UNKNOWN_MESSAGE


def test_control_replies() -> None:
    assert parse_frame('{"result":null,"id":1}', INGESTED) == ControlReply(1, None)
    assert parse_frame('{"result":["btcusdt@kline_1m"],"id":3}', INGESTED) == ControlReply(
        3, ["btcusdt@kline_1m"]
    )
    err = parse_frame('{"code": 2, "msg": "Invalid request: too many parameters"}', INGESTED)
    assert err == ControlReply(None, None, 2, "Invalid request: too many parameters")


# -- reconnect delays and pacing ------------------------------------------------------------


def test_equal_jitter_backoff_grows_up_to_the_cap() -> None:
    # The producer's reconnect delays: qryptify.retry.backoff with jitter 0.5.
    low = backoff(0.1, 2.0, jitter=0.5, rand=lambda: 0.0)
    assert [round(next(low), 3) for _ in range(7)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    high = backoff(0.1, 2.0, jitter=0.5, rand=lambda: 1.0)
    assert [round(next(high), 3) for _ in range(7)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    plain = backoff(0.5, 3.0)
    assert [next(plain) for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    for bad in ({"initial_s": 0.0}, {"maximum_s": 0.05}, {"factor": 0.5}, {"jitter": 1.5}):
        with pytest.raises(ValueError):
            next(backoff(**{"initial_s": 0.1, "maximum_s": 1.0} | bad))  # type: ignore[arg-type]


def test_connect_pacer_spaces_attempts_and_caps_the_window() -> None:
    pacer = ConnectPacer(min_spacing_ms=100, max_attempts=3, window_ms=1000)
    assert pacer.delay(0) == 0
    pacer.record(0)
    assert pacer.delay(40) == 60
    pacer.record(100)
    pacer.record(200)
    # three attempts in the window: the next one waits until the first leaves it
    assert pacer.delay(300) == 700
    assert pacer.delay(1000) == 0
    pacer.record(1000)
    assert pacer.delay(1050) == 50


def test_a_monthly_candle_beyond_the_calendar_is_malformed_not_a_crash() -> None:
    # 1M close times need calendar arithmetic, which ends at year 9999: such a frame is bad
    # input for the DLQ (it used to raise ValueError out of parse_frame).
    data = closed_example(t=10**19, T=10**19 + 1, i="1M")
    frame = parse_frame(combined(data, f"{data['k']['s'].lower()}@kline_1M"), 0)
    assert isinstance(frame, Malformed)
    assert frame.kind == ws.INVALID_KLINE
    assert "open_time out of range" in frame.reason
