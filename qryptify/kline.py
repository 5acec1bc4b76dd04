"""The kline record, the empty-range record, and the closed-candle rule.

Prices and volumes stay the exchange's decimal strings: the Kafka log is exact, and only the
database rounds them to DOUBLE PRECISION.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from qryptify.errors import InvalidKline, MalformedPayload, PairError
from qryptify.pairs import close_time, validate_interval, validate_symbol

Source = Literal["rest", "ws", "archive"]
SOURCES: tuple[Source, ...] = ("rest", "ws", "archive")

_DECIMAL_RE = re.compile(r"^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$")


@dataclass(frozen=True, slots=True)
class Kline:
    """One candle of one pair, as the exchange reports it."""

    symbol: str
    interval: str
    open_time: int  # ms since epoch, UTC
    close_time: int  # ms; Binance's: next open - 1
    open: str
    high: str
    low: str
    close: str
    volume: str
    quote_volume: str
    trades: int
    taker_buy_base: str
    taker_buy_quote: str
    source: Source
    ingested_at: int  # ms; when this process read it from the exchange

    @property
    def key(self) -> str:
        return f"{self.symbol}|{self.interval}"

    def is_closed(self, exchange_now_ms: int) -> bool:
        """Closed iff its last millisecond is in the past by the exchange's clock."""
        return closed_at(self.close_time, exchange_now_ms)

    def same_values(self, other: Kline) -> bool:
        """True when both carry the same market data (source and ingest time aside)."""
        return _market_fields(self) == _market_fields(other)

    @classmethod
    def from_rest_row(cls, symbol: str, interval: str, row: object, ingested_at: int) -> Kline:
        """Build from one 12-element row of ``/fapi/v1/klines`` (or an archive CSV, as strings)."""
        return _from_row(symbol, interval, row, ingested_at, "rest")

    @classmethod
    def from_archive_row(
        cls, symbol: str, interval: str, row: Sequence[str], ingested_at: int
    ) -> Kline:
        return _from_row(symbol, interval, row, ingested_at, "archive")

    @classmethod
    def from_ws(cls, payload: Mapping[str, Any], ingested_at: int) -> Kline:
        """Build from a kline event's ``data`` object (``{"e":"kline","k":{...}}``)."""
        k = payload.get("k") if isinstance(payload, Mapping) else None
        if not isinstance(k, Mapping):
            raise MalformedPayload("ws", "kline event without a 'k' object")
        try:
            return cls(
                symbol=_symbol(k["s"], "ws"),
                interval=_interval(k["i"], "ws"),
                open_time=_int(k["t"], "ws", "t"),
                close_time=_int(k["T"], "ws", "T"),
                open=_dec(k["o"], "ws", "o"),
                high=_dec(k["h"], "ws", "h"),
                low=_dec(k["l"], "ws", "l"),
                close=_dec(k["c"], "ws", "c"),
                volume=_dec(k["v"], "ws", "v"),
                quote_volume=_dec(k["q"], "ws", "q"),
                trades=_int(k["n"], "ws", "n"),
                taker_buy_base=_dec(k["V"], "ws", "V"),
                taker_buy_quote=_dec(k["Q"], "ws", "Q"),
                source="ws",
                ingested_at=ingested_at,
            )
        except KeyError as exc:
            raise MalformedPayload("ws", f"kline field {exc.args[0]!r} missing") from None


#: Exchange JSON is at most 3 levels deep; anything far deeper is not what Binance sends (and
#: would make ``repr`` in an error message, or ``json.loads`` itself, hit the recursion limit).
MAX_JSON_DEPTH = 32


def nested_deeper_than(value: object, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when lists/dicts in ``value`` nest more than ``limit`` levels (level by level, no
    recursion; scalars are skipped, so a 499-row klines page costs well under a millisecond)."""
    if type(value) not in _CONTAINERS:
        return False
    level: list[Any] = [value]
    for _ in range(limit):
        deeper: list[Any] = []
        for node in level:
            kind = type(node)
            if kind is dict:
                deeper += [c for c in node.values() if type(c) in _CONTAINERS]
            elif kind is list:
                deeper += [c for c in node if type(c) in _CONTAINERS]
        if not deeper:
            return False
        level = deeper
    return True


_CONTAINERS = (list, dict)


def _market_fields(k: Kline) -> tuple[object, ...]:
    return (
        k.symbol, k.interval, k.open_time, k.close_time, k.open, k.high, k.low, k.close,
        k.volume, k.quote_volume, k.trades, k.taker_buy_base, k.taker_buy_quote,
    )  # fmt: skip


def _from_row(symbol: str, interval: str, row: object, ingested_at: int, source: Source) -> Kline:
    if not isinstance(row, list | tuple) or len(row) < 11:
        raise MalformedPayload(source, f"kline row must be a list of 12 values, got {row!r:.120}")
    return Kline(
        symbol=symbol,
        interval=interval,
        open_time=_int(row[0], source, "open time"),
        close_time=_int(row[6], source, "close time"),
        open=_dec(row[1], source, "open"),
        high=_dec(row[2], source, "high"),
        low=_dec(row[3], source, "low"),
        close=_dec(row[4], source, "close"),
        volume=_dec(row[5], source, "volume"),
        quote_volume=_dec(row[7], source, "quote volume"),
        trades=_int(row[8], source, "trades"),
        taker_buy_base=_dec(row[9], source, "taker buy base"),
        taker_buy_quote=_dec(row[10], source, "taker buy quote"),
        source=source,
        ingested_at=ingested_at,
    )


def _int(value: object, source: str, name: str) -> int:
    if isinstance(value, bool):
        raise MalformedPayload(source, f"{name} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if source == "archive" and isinstance(value, str) and value.isdigit():
        return int(value)
    raise MalformedPayload(source, f"{name} must be an integer, got {value!r:.40}")


def _dec(value: object, source: str, name: str) -> str:
    if source == "archive" and isinstance(value, str):
        value = value.strip()
    if not isinstance(value, str) or not _DECIMAL_RE.match(value):
        raise MalformedPayload(source, f"{name} must be a decimal string, got {value!r:.40}")
    return value


def _symbol(value: object, source: str) -> str:
    try:
        return validate_symbol(value)
    except PairError as exc:
        raise MalformedPayload(source, str(exc)) from None


def _interval(value: object, source: str) -> str:
    try:
        return validate_interval(value)
    except PairError as exc:
        raise MalformedPayload(source, str(exc)) from None


def validate_kline(k: Kline) -> Kline:
    """Raise InvalidKline unless ``k`` is a well-formed candle; return it unchanged otherwise."""
    try:
        validate_symbol(k.symbol)
        validate_interval(k.interval)
    except PairError as exc:
        raise InvalidKline(str(exc)) from None
    try:
        expected_close = close_time(k.interval, k.open_time)
    except (ValueError, OverflowError, OSError):  # a calendar month beyond datetime's range
        raise InvalidKline(f"{k.key} {k.open_time}: open_time out of range") from None
    if k.close_time != expected_close:
        raise InvalidKline(
            f"{k.key} {k.open_time}: close_time {k.close_time} != open_time + interval - 1 "
            f"({expected_close})"
        )
    try:
        o, h, lo, c = (Decimal(x) for x in (k.open, k.high, k.low, k.close))
        volumes = [
            Decimal(x) for x in (k.volume, k.quote_volume, k.taker_buy_base, k.taker_buy_quote)
        ]
    except InvalidOperation:
        raise InvalidKline(f"{k.key} {k.open_time}: a price or volume is not a decimal") from None
    if not all(x.is_finite() for x in (o, h, lo, c, *volumes)):
        # NaN would make the comparisons below raise rather than answer.
        raise InvalidKline(f"{k.key} {k.open_time}: a price or volume is not a finite decimal")
    if not (lo <= o <= h and lo <= c <= h):
        raise InvalidKline(
            f"{k.key} {k.open_time}: OHLC violates low <= open,close <= high "
            f"(o={k.open} h={k.high} l={k.low} c={k.close})"
        )
    if any(v < 0 for v in volumes) or k.trades < 0:
        raise InvalidKline(f"{k.key} {k.open_time}: negative volume or trade count")
    return k


def closed_at(close_time_ms: int, exchange_now_ms: int) -> bool:
    """The closed-candle rule (invariants 1 and 5), the one place it is written: a candle is
    closed iff its close time (its last millisecond) is before the exchange's "now"."""
    return close_time_ms < exchange_now_ms


def closed_klines(klines: Iterable[Kline], exchange_now_ms: int) -> list[Kline]:
    """Keep only candles closed by the exchange's clock (invariant 1 and 5)."""
    return [k for k in klines if closed_at(k.close_time, exchange_now_ms)]


@dataclass(frozen=True, slots=True)
class EmptyRange:
    """Open times in ``[start_time, end_time)`` that the exchange confirmed have no candles."""

    symbol: str
    interval: str
    start_time: int
    end_time: int
    confirmed_at: int

    @property
    def key(self) -> str:
        return f"{self.symbol}|{self.interval}"

    def __post_init__(self) -> None:
        if self.end_time <= self.start_time:
            raise InvalidKline(
                f"empty range {self.symbol}|{self.interval} end {self.end_time} <= start "
                f"{self.start_time}"
            )


Event = Kline | EmptyRange


def latest_per_key(records: Iterable[tuple[int, Kline]]) -> list[Kline]:
    """De-duplicate by (symbol, interval, open time): the record with the highest offset wins.

    ``records`` are ``(offset, kline)``; offsets only need to be comparable within a pair,
    which holds because one pair lives in one partition.
    """
    best: dict[tuple[str, str, int], tuple[int, Kline]] = {}
    for offset, k in records:
        ident = (k.symbol, k.interval, k.open_time)
        seen = best.get(ident)
        if seen is None or offset >= seen[0]:
            best[ident] = (offset, k)
    return [k for _, k in best.values()]
