"""Client-side helpers for the simulator tests: format checkers and WebSocket collectors.

The checkers encode the documented wire formats (binance-api.md §1.1, §3). Each is first run on
the documentation's own example, so a format the simulator passes is the exchange's format.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from tests.support.processes import TIMEOUT_FACTOR as FACTOR

Params = dict[str, str | int]

START_MS = 1_725_148_800_000  # 2024-09-01T00:00:00Z: sim time at start (after DELISTUSDT settled)
WAIT_S = 20.0 * FACTOR  # hang guard for anything that should happen within a few seconds

#: The official REST example row (Kline-Candlestick-Data), verbatim.
DOC_REST_ROW: list[Any] = [
    1499040000000,
    "0.01634790",
    "0.80000000",
    "0.01575800",
    "0.01577100",
    "148976.11427815",
    1499644799999,
    "2434.19055334",
    308,
    "1756.87402397",
    "28.46694368",
    "17928899.62484339",
]
#: Real /fapi/v1/klines rows (BTCUSDT 5m, captured 2021-03-21; binance-api.md §7A), verbatim.
REAL_REST_ROWS: list[list[Any]] = [
    [
        1616338800000,
        "57212.69",
        "57315.00",
        "57196.19",
        "57300.00",
        "496.263",
        1616339099999,
        "28425514.78940",
        7160,
        "273.108",
        "15642623.69718",
        "0",
    ],
    [
        1616339100000,
        "57300.00",
        "57300.00",
        "57200.61",
        "57206.47",
        "174.865",
        1616339399999,
        "10009130.07051",
        2602,
        "60.409",
        "3457649.49072",
        "0",
    ],
]
#: The official kline stream example (Kline-Candlestick-Streams), verbatim.
DOC_WS_EVENT = json.loads(
    '{"e":"kline","E":1638747660000,"s":"BTCUSDT","k":{"t":1638747660000,"T":1638747719999,'
    '"s":"BTCUSDT","i":"1m","f":100,"L":200,"o":"0.0010","c":"0.0020","h":"0.0025",'
    '"l":"0.0015","v":"1000","n":100,"x":false,"q":"1.0000","V":"500","Q":"0.500",'
    '"B":"123456"}}'
)
#: A real combined frame recorded from fstream (cryptofeed sample data), verbatim.
REAL_COMBINED_FRAME = json.loads(
    '{"stream":"sushiusdt@kline_1m","data":{"e":"kline","E":1626992760203,"s":"SUSHIUSDT",'
    '"k":{"t":1626992700000,"T":1626992759999,"s":"SUSHIUSDT","i":"1m","f":126902874,'
    '"L":126902986,"o":"7.6080","c":"7.6170","h":"7.6180","l":"7.6070","v":"3005","n":113,'
    '"x":true,"q":"22875.8590","V":"1900","Q":"14464.6960","B":"0"}}}'
)
REST_TYPES = [int, str, str, str, str, str, int, str, int, str, str, str]
K_FIELDS = ["t", "T", "s", "i", "f", "L", "o", "c", "h", "l", "v", "n", "x", "q", "V", "Q", "B"]
K_INTS = {"t", "T", "f", "L", "n"}


def is_decimal_string(value: object) -> bool:
    if not isinstance(value, str) or not value:
        return False
    whole, _, frac = value.partition(".")
    return whole.isdigit() and (frac == "" or frac.isdigit())


def check_rest_row(row: Any) -> None:
    """Assert the documented 12-column layout and JSON types of one kline row."""
    assert isinstance(row, list) and len(row) == 12, row
    assert [type(v) for v in row] == REST_TYPES, row
    assert all(is_decimal_string(row[i]) for i in (1, 2, 3, 4, 5, 7, 9, 10, 11)), row
    assert row[6] > row[0], row


def check_kline_event(event: Any) -> None:
    """Assert the documented raw kline payload: field names, order and types."""
    assert isinstance(event, dict) and list(event) == ["e", "E", "s", "k"], event
    assert event["e"] == "kline" and type(event["E"]) is int and type(event["s"]) is str
    k = event["k"]
    assert list(k) == K_FIELDS, list(k)
    for name in K_FIELDS:
        expected = bool if name == "x" else int if name in K_INTS else str
        assert type(k[name]) is expected, (name, k[name])
    assert k["s"] == event["s"]
    assert all(is_decimal_string(k[n]) for n in ("o", "c", "h", "l", "v", "q", "V", "Q", "B"))
    assert k["T"] > k["t"]


# The checkers must accept the documentation's own examples.
check_rest_row(DOC_REST_ROW)
for _row in REAL_REST_ROWS:
    check_rest_row(_row)
check_kline_event(DOC_WS_EVENT)
check_kline_event(REAL_COMBINED_FRAME["data"])


async def collect(
    url: str,
    stop: Callable[[list[Any]], bool],
    timeout_s: float = WAIT_S,
    raw: bool = False,
) -> list[Any]:
    """Receive frames (JSON-decoded unless ``raw``) until ``stop(frames)`` or the hang guard."""
    frames: list[Any] = []
    async with websockets.connect(url, open_timeout=WAIT_S) as ws:
        await _collect_on(ws, frames, stop, timeout_s, raw)
    return frames


async def _collect_on(
    ws: ClientConnection,
    frames: list[Any],
    stop: Callable[[list[Any]], bool],
    timeout_s: float,
    raw: bool,
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not stop(frames):
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise AssertionError(f"gave up waiting after {len(frames)} frames")
        text = await asyncio.wait_for(ws.recv(), remaining)
        frames.append(text if raw else json.loads(text))


#: A WS kline's fields in the order of a REST (and truth) row's first eleven columns.
ROW_FIELDS = ("t", "o", "h", "l", "c", "v", "T", "q", "n", "V", "Q")


def row_of(k: dict[str, Any]) -> list[Any]:
    """A WS kline object as the first eleven columns of the REST row for the same candle."""
    return [k[name] for name in ROW_FIELDS]


def closes(frames: list[Any]) -> list[dict[str, Any]]:
    """The ``k`` objects of x:true frames (combined or raw)."""
    out = []
    for f in frames:
        data = f.get("data", f) if isinstance(f, dict) else None
        if isinstance(data, dict) and data.get("e") == "kline" and data["k"]["x"] is True:
            out.append(data["k"])
    return out


def klines_of(frames: list[Any]) -> list[dict[str, Any]]:
    out = []
    for f in frames:
        data = f.get("data", f) if isinstance(f, dict) else None
        if isinstance(data, dict) and data.get("e") == "kline":
            out.append(data["k"])
    return out
