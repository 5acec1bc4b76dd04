"""Binance USDⓈ-M combined kline streams, sans I/O: URLs, connection planning, frame parsing,
reconnect delays and the connection-attempt pacer. Nothing here touches a socket or a clock.

Facts this module encodes (``/work/shared/reference/binance-api.md`` §3):

* Since 2026-04-23 klines are served only under the routed path ``/market``; an unrouted
  ``/stream?streams=…`` connection completes the handshake and then sends no kline frame.
  Every URL built here is therefore ``<host>/market/stream?streams=a/b/…``.
* A combined frame is ``{"stream": "btcusdt@kline_1m", "data": {"e": "kline", "E": …,
  "k": {…}}}``; exactly one frame per candle carries ``"x": true`` (the closed candle).
* The exchange serialises every frame the same way: no whitespace, keys in the documented
  order (``stream, data``; ``e, E, s, k``; ``k = t, T, s, i, f, L, o, c, h, l, v, n, x, q, V,
  Q, B``). A combined stream carries many ``"x":false`` snapshots per candle (Binance: one per
  250 ms while trades happen); ``parse_frame`` recognises those in exactly this layout from
  the text alone (see ``_open_snapshot``), so they cost no JSON decoding.
* Control replies are ``{"result": …, "id": N}`` or ``{"code": 0..3, "msg": …}``.
* At most 200 streams per connection is the safe cap (the docs say 200 or 1024); clients may
  send at most 10 messages per second per connection; connection attempts are rate limited
  per IP (300 per 5 minutes on spot; the fapi value is unconfirmed), so connections are opened
  gradually.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeGuard
from urllib.parse import urlsplit, urlunsplit

from qryptify.config import market_stream_url
from qryptify.errors import InvalidKline, MalformedPayload
from qryptify.kline import MAX_JSON_DEPTH, Kline, nested_deeper_than, validate_kline
from qryptify.pairs import Pair

#: The safe cap of streams on one connection (older docs: 200; newer: 1024).
MAX_STREAMS_PER_CONNECTION: Final = 200
#: Client → server messages per second per connection before the server disconnects.
MAX_CLIENT_MESSAGES_PER_S: Final = 10
#: Connection attempts per IP: 300 per 5 minutes (documented for spot; assumed for fapi).
CONNECT_ATTEMPTS_PER_WINDOW: Final = 300
CONNECT_WINDOW_MS: Final = 5 * 60_000
#: The server pings every 3 minutes and drops a client that did not pong within 10 minutes.
SERVER_PING_INTERVAL_S: Final = 180.0
SERVER_PONG_DEADLINE_S: Final = 600.0
#: The server cuts every connection after 24 hours.
CONNECTION_LIFETIME_MS: Final = 24 * 3_600_000
#: The largest frame read: a kline event is ~600 bytes. A larger one closes the connection
#: (1009 "message too big") instead of being buffered; with MAX_QUEUED_FRAMES queued frames a
#: connection holds at most 64 MiB.
MAX_FRAME_BYTES: Final = 64 * 1024
MAX_QUEUED_FRAMES: Final = 1024


def connect_options(ping_interval_s: float | None) -> dict[str, Any]:
    """Keyword arguments for ``websockets.asyncio.client.connect``: the frame and queue caps
    above, our ping cadence, short open/close timeouts, no proxy."""
    return {
        "open_timeout": 10,
        "ping_interval": ping_interval_s,
        "ping_timeout": ping_interval_s,
        "close_timeout": 2,
        "max_size": MAX_FRAME_BYTES,
        "max_queue": MAX_QUEUED_FRAMES,
        "proxy": None,
        "user_agent_header": "qryptify-ingestor",
    }


# Malformed frame kinds (a closed vocabulary: metrics label values and DLQ reasons).
NOT_UTF8: Final = "not_utf8"
NOT_JSON: Final = "not_json"
NOT_OBJECT: Final = "not_object"
UNKNOWN_MESSAGE: Final = "unknown_message"
UNEXPECTED_EVENT: Final = "unexpected_event"
BAD_FIELD: Final = "bad_field"
INVALID_KLINE: Final = "invalid_kline"
STREAM_MISMATCH: Final = "stream_mismatch"
MALFORMED_KINDS: Final = (
    NOT_UTF8, NOT_JSON, NOT_OBJECT, UNKNOWN_MESSAGE, UNEXPECTED_EVENT, BAD_FIELD,
    INVALID_KLINE, STREAM_MISMATCH,
)  # fmt: skip


# -- URLs and planning ----------------------------------------------------------------------


def stream_url(endpoint: str, streams: Sequence[str]) -> str:
    """The combined-stream URL ``<host>/market/stream?streams=a/b`` for ``streams``.

    Any configured endpoint (the legacy ``/stream`` or ``/ws``, a bare host, ``/market``) is
    routed to ``/market/stream``: legacy paths connect but deliver no klines since 2026-04-23.
    """
    if not streams:
        raise ValueError("a combined stream needs at least one stream name")
    for name in streams:
        if not name or "/" in name or "?" in name or "&" in name or name != name.lower():
            raise ValueError(f"not a stream name: {name!r} (expected e.g. btcusdt@kline_1m)")
    base = urlsplit(market_stream_url(endpoint))
    return urlunsplit(base._replace(query="streams=" + "/".join(streams)))


def plan_connections(
    pairs: Sequence[Pair], max_per_conn: int = MAX_STREAMS_PER_CONNECTION
) -> list[tuple[Pair, ...]]:
    """Split ``pairs`` over the fewest connections of at most ``max_per_conn`` streams each,
    balanced (sizes differ by at most one), keeping the configured order.
    """
    if max_per_conn < 1:
        raise ValueError(f"max streams per connection must be >= 1, got {max_per_conn}")
    unique = list(dict.fromkeys(pairs))
    if not unique:
        return []
    n_conns = math.ceil(len(unique) / max_per_conn)
    size, extra = divmod(len(unique), n_conns)
    plan: list[tuple[Pair, ...]] = []
    start = 0
    for i in range(n_conns):
        end = start + size + (1 if i < extra else 0)
        plan.append(tuple(unique[start:end]))
        start = end
    return plan


def stream_pairs(pairs: Sequence[Pair]) -> dict[str, Pair]:
    """Stream name → pair (``btcusdt@kline_1m`` → BTCUSDT/1m)."""
    return {p.stream: p for p in pairs}


# -- frames ---------------------------------------------------------------------------------

_STREAM_RE = re.compile(r'\s*\{\s*"stream"\s*:\s*"([a-z0-9_]{1,40}@kline_[0-9]{1,2}[mhdwM])"')

# An open candle's snapshot exactly as the exchange serialises it (module docstring). What
# ``parse_frame`` checks of an open candle is captured (stream, E, k.t, k.s, k.i) or literal
# (``"e":"kline"``, ``"x":false``); the other fields only have to be JSON strings without
# escapes or control characters, or JSON integers. So any text this matches is one JSON object,
# without duplicate keys, that ``json.loads`` reads to exactly the captured values. Anything
# else, or anything slightly different, takes the full path.
_JSTR = r'"[^"\\\x00-\x1f]*"'
_JINT = r"-?(?:0|[1-9][0-9]*)"
_OPEN_SNAPSHOT_RE = re.compile(
    rf'\{{"stream":"([^"\\\x00-\x1f]+)","data":\{{"e":"kline","E":({_JINT}),'
    rf'"s":{_JSTR},"k":\{{"t":({_JINT}),"T":{_JINT},"s":"([^"\\\x00-\x1f]*)",'
    rf'"i":"([^"\\\x00-\x1f]*)","f":{_JINT},"L":{_JINT},"o":{_JSTR},"c":{_JSTR},'
    rf'"h":{_JSTR},"l":{_JSTR},"v":{_JSTR},"n":{_JINT},"x":false,"q":{_JSTR},"V":{_JSTR},'
    rf'"Q":{_JSTR},"B":{_JSTR}\}}\}}\}}'
)
#: The literal every open snapshot contains (a cheap test before the pattern).
_OPEN_MARK: Final = '"x":false'


@dataclass(frozen=True, slots=True)
class KlineFrame:
    """A valid kline event. ``kline`` is set for closed candles (and for open ones when asked)."""

    stream: str
    event_time: int  # "E", exchange ms
    open_time: int  # "k.t"
    closed: bool  # "k.x"
    kline: Kline | None


@dataclass(frozen=True, slots=True)
class ControlReply:
    """The answer to a SUBSCRIBE/LIST_SUBSCRIPTIONS/… request, or a control error."""

    id: int | None
    result: object
    error_code: int | None = None
    error_msg: str | None = None


@dataclass(frozen=True, slots=True)
class Malformed:
    """A frame that is not what Binance sends; ``kind`` is one of ``MALFORMED_KINDS``."""

    kind: str
    reason: str
    stream: str | None = None


Frame = KlineFrame | ControlReply | Malformed


def parse_frame(raw: str | bytes, ingested_at: int, *, closed_only: bool = True) -> Frame:
    """Classify one text frame of a combined (or raw) kline stream.

    Closed candles (``k.x is True``) are fully parsed and validated (fields, types, the close
    time rule, OHLC sanity) into ``KlineFrame.kline``. With ``closed_only`` an open candle's
    snapshot is only checked for shape (``kline`` None): it will never be published, and
    skipping the decimal checks keeps the hot path cheap; a snapshot in the exchange's exact
    layout is even recognised without decoding its JSON (same result, a fraction of the cost).
    Anything that is or could be a closed candle, and anything malformed, is decoded in full.
    Never raises on bad input.
    """
    if isinstance(raw, bytes | bytearray | memoryview):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            return Malformed(NOT_UTF8, f"binary frame is not UTF-8: {exc.reason}")
    if closed_only and _OPEN_MARK in raw:
        snapshot = _open_snapshot(raw)
        if snapshot is not None:
            return snapshot
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        # Best effort: a truncated combined frame still names its stream up front.
        named = _STREAM_RE.match(raw)
        return Malformed(NOT_JSON, f"not JSON: {exc}", named.group(1) if named else None)
    # JSON cannot nest deeper than it has opening brackets: count them (in C) before walking.
    if raw.count("{") + raw.count("[") > MAX_JSON_DEPTH and nested_deeper_than(doc):
        return Malformed(NOT_OBJECT, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(doc, dict):
        return Malformed(NOT_OBJECT, f"top level is {type(doc).__name__}, not an object")
    if "data" in doc or "stream" in doc:
        stream = doc.get("stream")
        data = doc.get("data")
        if not isinstance(stream, str) or not stream:
            return Malformed(UNKNOWN_MESSAGE, "combined frame without a 'stream' name")
        if not isinstance(data, dict):
            return Malformed(UNKNOWN_MESSAGE, "combined frame without a 'data' object", stream)
        return _kline_event(stream, data, ingested_at, closed_only)
    if "e" in doc:
        return _kline_event(None, doc, ingested_at, closed_only)
    if "id" in doc and "result" in doc:
        ident = doc["id"]
        return ControlReply(ident if isinstance(ident, int) else None, doc["result"])
    if "code" in doc and "msg" in doc:
        code = doc["code"]
        ident = doc.get("id")
        return ControlReply(
            ident if isinstance(ident, int) else None,
            None,
            code if isinstance(code, int) else None,
            str(doc["msg"]),
        )
    keys = ", ".join(sorted(str(k) for k in doc)[:8])
    return Malformed(UNKNOWN_MESSAGE, f"object with keys [{keys}] is no known message")


def _kline_event(
    stream: str | None, data: Mapping[str, Any], ingested_at: int, closed_only: bool
) -> Frame:
    event = data.get("e")
    if event != "kline":
        return Malformed(UNEXPECTED_EVENT, f"event type {event!r:.40}, expected 'kline'", stream)
    k = data.get("k")
    if not isinstance(k, dict):
        return Malformed(BAD_FIELD, "kline event without a 'k' object", stream)
    event_time = data.get("E")
    if not _is_int(event_time):
        return Malformed(BAD_FIELD, f"E must be an integer, got {event_time!r:.40}", stream)
    closed = k.get("x")
    if not isinstance(closed, bool):
        return Malformed(BAD_FIELD, f"x must be a boolean, got {closed!r:.40}", stream)
    open_time = k.get("t")
    if not _is_int(open_time):
        return Malformed(BAD_FIELD, f"t must be an integer, got {open_time!r:.40}", stream)
    symbol, interval = k.get("s"), k.get("i")
    if not isinstance(symbol, str) or not isinstance(interval, str):
        return Malformed(BAD_FIELD, "k.s and k.i must be strings", stream)
    name = f"{symbol.lower()}@kline_{interval}"
    if stream is None:
        stream = name
    elif stream != name:
        return Malformed(STREAM_MISMATCH, f"frame of {symbol}/{interval} on {stream}", stream)
    if closed_only and not closed:
        return KlineFrame(stream, event_time, open_time, False, None)
    try:
        kline = validate_kline(Kline.from_ws(data, ingested_at))
    except MalformedPayload as exc:
        return Malformed(BAD_FIELD, exc.reason, stream)
    except InvalidKline as exc:
        return Malformed(INVALID_KLINE, exc.reason, stream)
    return KlineFrame(stream, event_time, kline.open_time, closed, kline)


def _open_snapshot(raw: str) -> KlineFrame | None:
    """``raw`` as an open candle's frame when it is one in the exchange's exact layout, else
    None (then the full path decides). What the full path checks of an open candle (a kline
    event, integer ``E`` and ``t``, ``x`` false, string ``s`` and ``i`` naming the frame's
    stream) is checked here, with the same outcome; the pattern admits only text that decodes
    to those values (``_OPEN_SNAPSHOT_RE``)."""
    match = _OPEN_SNAPSHOT_RE.fullmatch(raw)
    if match is None:
        return None
    stream, event_time, open_time, symbol, interval = match.groups()
    if stream != f"{symbol.lower()}@kline_{interval}":
        return None  # the full path names the mismatch
    return KlineFrame(stream, int(event_time), int(open_time), False, None)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


# -- reconnecting ---------------------------------------------------------------------------


def reconnect_delays(
    initial_s: float = 0.1,
    max_s: float = 30.0,
    factor: float = 2.0,
    rand: Callable[[], float] = random.random,
) -> Iterator[float]:
    """Jittered exponential backoff ("equal jitter"): the n-th delay is uniform in
    ``[d/2, d]`` with ``d = min(max_s, initial_s * factor**n)``. Infinite; restart the
    generator after a connection proved healthy.
    """
    if initial_s <= 0 or max_s < initial_s or factor < 1:
        raise ValueError("need 0 < initial_s <= max_s and factor >= 1")
    ceiling = initial_s
    while True:
        yield ceiling / 2 + rand() * ceiling / 2
        ceiling = min(max_s, ceiling * factor)


@dataclass(slots=True)
class ConnectPacer:
    """Connection attempts: at most ``max_attempts`` per sliding ``window_ms`` and at least
    ``min_spacing_ms`` apart, so hundreds of pairs open their connections gradually.

    ``delay(now_ms)`` says how long to wait before the next attempt; ``record(now_ms)`` notes
    an attempt. Pure: the caller supplies the (local, monotonic) time.
    """

    min_spacing_ms: int = 250
    max_attempts: int = CONNECT_ATTEMPTS_PER_WINDOW
    window_ms: int = CONNECT_WINDOW_MS
    _attempts: deque[int] = field(default_factory=deque)

    def __post_init__(self) -> None:
        if self.min_spacing_ms < 0 or self.max_attempts < 1 or self.window_ms < 1:
            raise ValueError("need min_spacing_ms >= 0, max_attempts >= 1, window_ms >= 1")

    def _recent(self, now_ms: int) -> deque[int]:
        attempts = self._attempts
        while attempts and attempts[0] <= now_ms - self.window_ms:
            attempts.popleft()
        return attempts

    def delay(self, now_ms: int) -> int:
        attempts = self._recent(now_ms)
        wait = 0
        if attempts:
            wait = max(wait, attempts[-1] + self.min_spacing_ms - now_ms)
        if len(attempts) >= self.max_attempts:
            wait = max(wait, attempts[-self.max_attempts] + self.window_ms - now_ms)
        return max(0, wait)

    def record(self, now_ms: int) -> None:
        self._recent(now_ms).append(now_ms)
