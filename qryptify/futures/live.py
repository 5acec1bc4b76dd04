"""The live futures path's pure middle: reading ``<symbol>@markPrice`` frames and deciding
which series to fetch when (functions of data and the exchange's now).

USDⓈ-M has no WebSocket stream of mark/index/premium **klines** (binance-api.md §3), so their
closed candles come from REST right after each close (the watchdog below: close + grace). The
``<symbol>@markPrice`` stream carries the next funding time ``T``: when a frame shows a later
``T`` than before, the funding at the earlier one has settled and is fetched at once; the
watchdog also fetches any funding whose time passed by ``grace`` (a dropped connection, a
missed frame). After every (re)connect every series is filled by REST from its position.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from qryptify.config import market_stream_url
from qryptify.errors import MalformedPayload
from qryptify.pairs import close_time, next_open, validate_symbol

MARK_STREAM_SUFFIX = "@markPrice@1s"


@dataclass(frozen=True, slots=True)
class MarkUpdate:
    symbol: str
    event_time: int
    next_funding_time: int  # 0 for contracts without funding


def mark_stream(symbol: str) -> str:
    return symbol.lower() + MARK_STREAM_SUFFIX


def mark_stream_url(endpoint: str, symbols: Sequence[str]) -> str:
    """The routed combined-stream URL (``/market/stream?streams=…``) of the symbols' mark-price
    streams. ``stream_url`` of the kline path refuses the camel case these names have."""
    if not symbols:
        raise ValueError("a combined stream needs at least one symbol")
    base = urlsplit(market_stream_url(endpoint))
    names = "/".join(mark_stream(validate_symbol(s)) for s in symbols)
    return urlunsplit(base._replace(query="streams=" + names))


def parse_mark_frame(raw: str | bytes) -> MarkUpdate:
    """A combined-stream ``markPriceUpdate`` frame → MarkUpdate; MalformedPayload otherwise."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise MalformedPayload("ws", f"markPrice frame is not JSON: {raw[:80]!r}") from None
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict) or data.get("e") != "markPriceUpdate":
        raise MalformedPayload("ws", f"not a markPriceUpdate frame: {str(raw)[:80]!r}")
    symbol, event, nxt = data.get("s"), data.get("E"), data.get("T")
    if not isinstance(symbol, str) or type(event) is not int or type(nxt) is not int:
        raise MalformedPayload("ws", f"markPriceUpdate fields s/E/T: {str(raw)[:120]!r}")
    if body.get("stream") != mark_stream(symbol):
        raise MalformedPayload("ws", f"markPriceUpdate for {symbol} on {body.get('stream')!r}")
    return MarkUpdate(symbol, event, nxt)


@dataclass(slots=True)
class FundingWatch:
    """Per symbol: the newest funding time published, the newest one known to have settled and
    the next one the stream announced."""

    published: dict[str, int] = field(default_factory=dict)
    settled: dict[str, int] = field(default_factory=dict)
    announced: dict[str, int] = field(default_factory=dict)
    retry_at: dict[str, int] = field(default_factory=dict)

    def on_update(self, update: MarkUpdate) -> bool:
        """True when the update shows that a funding settled (its ``T`` moved on)."""
        before = self.announced.get(update.symbol)
        if update.next_funding_time <= 0:
            return False
        self.announced[update.symbol] = update.next_funding_time
        if before is not None and update.next_funding_time > before:
            self.settled[update.symbol] = before
            return True
        return False

    def due(self, now_ms: int, grace_ms: int) -> list[str]:
        """Symbols with a funding that settled ``grace_ms`` ago (known from the stream, or the
        announced one whose time passed while no frame came) not yet published, unless a
        fetch for it ran within the retry interval."""
        out = []
        for symbol in self.announced:
            known = [t for t in (self.settled.get(symbol), self.announced[symbol]) if t]
            missing = [t for t in known if self.published.get(symbol, -1) < t]
            if any(t + grace_ms <= now_ms for t in missing) and now_ms >= self.retry_at.get(
                symbol, 0
            ):
                out.append(symbol)
        return out

    def fetched(self, symbol: str, newest: int | None, now_ms: int, retry_ms: int) -> None:
        if newest is not None and newest > self.published.get(symbol, -1):
            self.published[symbol] = newest
        self.retry_at[symbol] = now_ms + retry_ms


@dataclass(slots=True)
class CandleWatch:
    """Per series (kind, symbol, interval): the newest open time published; a series is due
    once its next candle closed ``grace_ms`` ago."""

    published: dict[tuple[str, str, str], int] = field(default_factory=dict)
    retry_at: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def due(self, now_ms: int, grace_ms: int) -> list[tuple[str, str, str]]:
        out = []
        for series, last in self.published.items():
            interval = series[2]
            nxt_close = close_time(interval, next_open(interval, last))
            if nxt_close + 1 + grace_ms <= now_ms and now_ms >= self.retry_at.get(series, 0):
                out.append(series)
        return out

    def fetched(
        self, series: tuple[str, str, str], newest: int | None, now_ms: int, retry_ms: int
    ) -> None:
        if newest is not None and newest > self.published.get(series, -1):
            self.published[series] = newest
        self.retry_at[series] = now_ms + retry_ms
