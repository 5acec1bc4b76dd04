"""WebSocket wire formats, pure: stream names, kline events, control messages, malformed frames.

Event layout and field order follow the official example (binance-api.md §3): outer
``e, E, s, k`` and ``k = {t, T, s, i, f, L, o, c, h, l, v, n, x, q, V, Q, B}``; ints for
``E t T f L n``, strings for prices/volumes, bool ``x``; ``B`` is ``"0"`` as in real frames.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from sim.bars import Bar, SymbolSpec
from sim.grid import INTERVALS, close_time
from sim.wire import Formatters

METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
_STREAM_RE = re.compile(r"^([a-z0-9_]+)@kline_([0-9]+[mhdwM])$")


def parse_kline_stream(name: str) -> tuple[str, str] | None:
    """``btcusdt@kline_1m`` → ``("BTCUSDT", "1m")``; None for anything else.

    Symbols in stream names are lower case (an upper-case name gets no data, as on the exchange).
    """
    match = _STREAM_RE.match(name)
    if not match or match.group(2) not in INTERVALS:
        return None
    return match.group(1).upper(), match.group(2)


def kline_event(
    spec: SymbolSpec,
    interval: str,
    open_ms: int,
    bar: Bar,
    closed: bool,
    event_ms: int,
    fmt: Formatters,
) -> str:
    """The raw kline payload as JSON text (built by template: thousands per second)."""
    fp, fq, fu = fmt.price, fmt.qty, fmt.quote
    sym = spec.symbol
    return (
        f'{{"e":"kline","E":{event_ms},"s":"{sym}","k":{{"t":{open_ms},'
        f'"T":{close_time(interval, open_ms)},"s":"{sym}","i":"{interval}",'
        f'"f":{bar.first_id},"L":{bar.last_id},"o":"{fp(bar.open)}","c":"{fp(bar.close)}",'
        f'"h":"{fp(bar.high)}","l":"{fp(bar.low)}","v":"{fq(bar.volume)}","n":{bar.trades},'
        f'"x":{"true" if closed else "false"},"q":"{fu(bar.quote)}","V":"{fq(bar.taker_base)}",'
        f'"Q":"{fu(bar.taker_quote)}","B":"0"}}}}'
    )


def wrap_combined(stream: str, payload: str) -> str:
    return f'{{"stream":"{stream}","data":{payload}}}'


def corrected_bar(bar: Bar) -> Bar:
    """What the WS said before the exchange corrected the candle: one volume step more and,
    when the range allows it, a close one tick off (still within low..high)."""
    close = (
        bar.close + 1
        if bar.close < bar.high
        else (bar.close - 1 if bar.close > bar.low else bar.close)
    )
    return bar._replace(close=close, volume=bar.volume + 1, taker_base=bar.taker_base)


def malformed(payload: str, kind: str) -> str:
    """A broken version of a raw kline payload (the combined wrapper is applied by the caller,
    except for ``bad_json`` which breaks the whole frame text)."""
    if kind == "bad_json":
        return payload[: max(1, len(payload) // 2)]
    event: dict[str, Any] = json.loads(payload)
    k: dict[str, Any] = event["k"]
    if kind == "missing_field":
        del k["c"]
    elif kind == "wrong_type":
        k["t"] = str(k["t"])
        k["o"] = float(k["o"])
    elif kind == "bad_ohlc":
        # high below low (and so below open/close): violates low <= open, close <= high.
        high, low = k["h"], k["l"]
        k["h"], k["l"] = low, high
        if high == low:
            k["l"] = _bump(high)
    else:
        raise ValueError(f"unknown malformed kind {kind!r}")
    return json.dumps(event, separators=(",", ":"))


def _bump(decimal_text: str) -> str:
    whole, _, frac = decimal_text.partition(".")
    if not frac:
        return str(int(whole) + 1)
    scaled = int(whole + frac) + 1
    text = str(scaled).rjust(len(frac) + 1, "0")
    return f"{text[: -len(frac)]}.{text[-len(frac) :]}"


# ---------------------------------------------------------------------------------------------
# Control messages (binance-api.md §3, [LIVE])
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ControlResult:
    reply: str
    streams: tuple[str, ...]
    combined: bool
    too_many_streams: bool = False


def _reply(result: Any, request_id: int) -> str:
    return json.dumps({"result": result, "id": request_id}, separators=(",", ":"))


def _error(code: int, msg: str, request_id: int | None = None) -> str:
    body: dict[str, Any] = {"code": code, "msg": msg}
    if request_id is not None:
        body["id"] = request_id
    return json.dumps(body, separators=(",", ":"))


def handle_control(
    text: str, streams: tuple[str, ...], combined: bool, max_streams: int
) -> ControlResult:
    """Apply one client message to a connection's subscriptions and return the reply."""

    def fail(code: int, msg: str, request_id: int | None = None) -> ControlResult:
        return ControlResult(_error(code, msg, request_id), streams, combined)

    try:
        message = json.loads(text)
    except json.JSONDecodeError as exc:
        return fail(3, f"Invalid JSON: expected value at line {exc.lineno} column {exc.colno}")
    if not isinstance(message, dict):
        return fail(2, "Invalid request: expected an object at line 1 column 1")
    raw_id = message.get("id")
    request_id = raw_id if isinstance(raw_id, int) and not isinstance(raw_id, bool) else None
    if request_id is None or request_id < 0:
        return fail(2, "Invalid request: request ID must be an unsigned integer")
    if "method" not in message:
        return fail(
            2, f"Invalid request: missing field `method` at line 1 column {len(text)}", request_id
        )
    method = message["method"]
    if method not in METHODS:
        expected = ", ".join(f"`{m}`" for m in METHODS)
        return fail(
            2,
            f"Invalid request: unknown variant `{method}`, expected one of {expected}",
            request_id,
        )
    params = message.get("params", [])
    if not isinstance(params, list):
        return fail(2, "Invalid request: params must be an array", request_id)
    if method == "LIST_SUBSCRIPTIONS":
        return ControlResult(_reply(list(streams), request_id), streams, combined)
    if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
        if not all(isinstance(p, str) for p in params):
            return fail(2, "Invalid request: stream names must be strings", request_id)
        if method == "SUBSCRIBE":
            added = tuple(p for p in dict.fromkeys(params) if p not in streams)
            new = streams + added
            too_many = len(new) > max_streams
            return ControlResult(_reply(None, request_id), new, combined, too_many)
        gone = set(params)
        return ControlResult(
            _reply(None, request_id), tuple(s for s in streams if s not in gone), combined
        )
    if not params or not isinstance(params[0], str):
        return fail(2, "Invalid request: property name must be a string", request_id)
    if params[0] != "combined":
        return fail(0, "Unknown property", request_id)
    if method == "GET_PROPERTY":
        if len(params) != 1:
            return fail(2, "Invalid request: too many parameters", request_id)
        return ControlResult(_reply(combined, request_id), streams, combined)
    if len(params) != 2:
        return fail(2, "Invalid request: too many parameters", request_id)
    if not isinstance(params[1], bool):
        return fail(1, "Invalid value type: expected Boolean", request_id)
    return ControlResult(_reply(None, request_id), streams, params[1])
