"""Mark-price, index-price and premium-index klines: the record, its rules, and reading it
from REST and the archive (pure).

Same 12-column rows as the trade klines (binance-api.md §1.2): index 1-4 the kind's OHLC,
index 8 the count of price samples, the volumes ``"0"``. REST ``/fapi/v1/markPriceKlines``
and ``/fapi/v1/premiumIndexKlines`` take ``symbol``, ``/fapi/v1/indexPriceKlines`` takes
``pair``. Archive ``data/futures/um/{monthly,daily}/{markPriceKlines,indexPriceKlines,
premiumIndexKlines}/SYM/IVL/SYM-IVL-DATE.zip``, laid out like the kline archive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from qryptify.avro import NAMESPACE, AvroCodec
from qryptify.binance.archive import (
    DAILY_INTERVALS,
    ArchiveFile,
    Kind,
    parse_csv,
)
from qryptify.binance.rest import parse_klines
from qryptify.errors import (
    InvalidEmptyRange,
    InvalidFuturesRecord,
    InvalidKline,
    PairError,
    UndecodableRecord,
)
from qryptify.kline import SOURCES, EmptyRange, Kline, Source
from qryptify.pairs import (
    DAY_MS,
    Pair,
    close_time,
    month_start,
    next_month,
    validate_interval,
    validate_symbol,
)
from qryptify.sink.batch import check_empty_range

PRICE_KLINE = f"{NAMESPACE}.PriceKline"
PRICE_EMPTY_RANGE = f"{NAMESPACE}.PriceEmptyRange"


class FuturesConfigLike(Protocol):
    """A Config (qryptify.config imports this package, so no import back)."""

    @property
    def futures(self) -> Any: ...


PriceKind = Literal["mark", "index", "premium"]
PRICE_KINDS: tuple[PriceKind, ...] = ("mark", "index", "premium")
#: kind → the ``futures`` config key that turns it on
CONFIG_KEYS: dict[PriceKind, str] = {
    "mark": "mark_price",
    "index": "index_price",
    "premium": "premium_index",
}
DATASETS: dict[PriceKind, str] = {
    "mark": "markPriceKlines",
    "index": "indexPriceKlines",
    "premium": "premiumIndexKlines",
}
#: kind → (REST path, the parameter naming the instrument)
REST: dict[PriceKind, tuple[str, str]] = {
    "mark": ("/fapi/v1/markPriceKlines", "symbol"),
    "index": ("/fapi/v1/indexPriceKlines", "pair"),
    "premium": ("/fapi/v1/premiumIndexKlines", "symbol"),
}
TABLES: dict[PriceKind, str] = {
    "mark": "mark_price_klines",
    "index": "index_price_klines",
    "premium": "premium_index_klines",
}
#: kind → the table of its exchange-confirmed empty ranges (the layout of ``empty_ranges``)
EMPTY_TABLES: dict[PriceKind, str] = {
    "mark": "mark_price_empty_ranges",
    "index": "index_price_empty_ranges",
    "premium": "premium_index_empty_ranges",
}
MIN_MS = 1_262_304_000_000
MAX_MS = 7_258_118_400_000
_DECIMAL_RE = re.compile(r"-?[0-9]{1,30}(?:\.[0-9]{1,30})?")


@dataclass(frozen=True, slots=True)
class PriceKline:
    """One closed candle of a price kind."""

    kind: PriceKind
    symbol: str
    interval: str
    open_time: int
    close_time: int
    open: str
    high: str
    low: str
    close: str
    samples: int
    source: Source
    ingested_at: int

    @property
    def key(self) -> str:
        return f"{self.symbol}|{self.kind}|{self.interval}"


@dataclass(frozen=True, slots=True)
class PriceEmptyRange:
    """The trade klines' ``EmptyRange`` (open times the exchange confirmed have no candle) of
    one price kind's series: the same record with the kind, keyed like the series' candles."""

    kind: PriceKind
    range: EmptyRange

    @property
    def key(self) -> str:
        return f"{self.range.symbol}|{self.kind}|{self.range.interval}"


def validate_price_empty_range(e: PriceEmptyRange) -> PriceEmptyRange:
    """Return ``e`` or raise InvalidEmptyRange naming the field (the kline topic's rules)."""
    if e.kind not in PRICE_KINDS:
        raise InvalidEmptyRange(f"price empty range: unknown kind {e.kind!r:.10}")
    check_empty_range(e.range)
    return e


def validate_price_kline(k: PriceKline) -> PriceKline:
    """Return ``k`` or raise InvalidFuturesRecord naming the field."""
    where = f"{k.kind!r:.10} {k.symbol!r:.30} {k.interval!r:.6} {k.open_time!r:.20}"
    if k.kind not in PRICE_KINDS:
        raise InvalidFuturesRecord(f"price kline {where}: unknown kind")
    try:
        validate_symbol(k.symbol)
        validate_interval(k.interval)
    except PairError as exc:
        raise InvalidFuturesRecord(f"price kline {where}: {exc.reason}") from None
    if type(k.open_time) is not int or not MIN_MS <= k.open_time < MAX_MS:
        raise InvalidFuturesRecord(f"price kline {where}: open_time outside 2010..2200")
    if k.close_time != close_time(k.interval, k.open_time):
        raise InvalidFuturesRecord(f"price kline {where}: close_time {k.close_time!r:.20}")
    texts = (k.open, k.high, k.low, k.close)
    if not all(isinstance(t, str) and _DECIMAL_RE.fullmatch(t) for t in texts):
        raise InvalidFuturesRecord(f"price kline {where}: a price is not a plain decimal")
    o, h, lo, c = (float(t) for t in texts)
    if not (lo <= o <= h and lo <= c <= h):
        raise InvalidFuturesRecord(f"price kline {where}: OHLC violates low <= open,close <= high")
    if type(k.samples) is not int or not 0 <= k.samples < 2**63:
        raise InvalidFuturesRecord(f"price kline {where}: samples {k.samples!r:.20}")
    if k.source not in SOURCES:
        raise InvalidFuturesRecord(f"price kline {where}: unknown source {k.source!r:.20}")
    if type(k.ingested_at) is not int or not 0 <= k.ingested_at < 2**63:
        raise InvalidFuturesRecord(f"price kline {where}: ingested_at {k.ingested_at!r:.20}")
    return k


def from_kline(kind: PriceKind, k: Kline) -> PriceKline:
    """A parsed 12-column row (REST or archive) → the kind's record (trade count = samples)."""
    return PriceKline(kind, k.symbol, k.interval, k.open_time, k.close_time, k.open, k.high,
                      k.low, k.close, k.trades, k.source, k.ingested_at)  # fmt: skip


def parse_rest(kind: PriceKind, pair: Pair, body: object, ingested_at: int) -> list[PriceKline]:
    """A REST body of the kind → records (including the still-open candle), ascending;
    MalformedPayload if off-shape."""
    return [from_kline(kind, k) for k in parse_klines(pair, body, ingested_at)]


@dataclass(frozen=True, slots=True)
class PriceArchiveFile(ArchiveFile):
    """A kline-shaped archive file of a price kind (``dataset`` names its directory)."""

    dataset: str = ""

    @classmethod
    def of(cls, kind: PriceKind, period: Kind, pair: Pair, ts_ms: int) -> PriceArchiveFile:
        base = (ArchiveFile.monthly if period == "monthly" else ArchiveFile.daily)(
            pair.symbol, pair.interval, ts_ms
        )
        return cls(period, pair.symbol, pair.interval, base.start_ms, base.end_ms, DATASETS[kind])

    @property
    def path(self) -> str:
        # ArchiveFile.path names the kline directory; zero-argument super() does not work in
        # slotted dataclasses on Python 3.11.
        kline_path: str = ArchiveFile.path.fget(self)  # type: ignore[attr-defined]
        return kline_path.replace("/klines/", f"/{self.dataset}/", 1)


def parse_archive(
    kind: PriceKind, data: bytes, file: PriceArchiveFile, ingested_at: int
) -> list[PriceKline]:
    """An archive CSV of the kind → records in the file's period; ArchiveError names the line."""
    rows = parse_csv(data, file.symbol, file.interval, ingested_at, file.csv_name)
    return [from_kline(kind, k) for k in rows if file.start_ms <= k.open_time < file.end_ms]


def month_files(kind: PriceKind, pair: Pair, start_ms: int, end_ms: int) -> list[PriceArchiveFile]:
    """Monthly files of the kind whose month lies wholly in [start_ms's month, end_ms)."""
    out: list[PriceArchiveFile] = []
    month = month_start(start_ms)
    while next_month(month) <= end_ms:
        out.append(PriceArchiveFile.of(kind, "monthly", pair, month))
        month = next_month(month)
    return out


def day_files(kind: PriceKind, pair: Pair, start_ms: int, end_ms: int) -> list[PriceArchiveFile]:
    """Daily files of the kind whose day lies wholly in [start_ms's day, end_ms); none for
    intervals without daily files (above 1d)."""
    if pair.interval not in DAILY_INTERVALS:
        return []
    out: list[PriceArchiveFile] = []
    day = start_ms - start_ms % DAY_MS
    while day + DAY_MS <= end_ms:
        out.append(PriceArchiveFile.of(kind, "daily", pair, day))
        day += DAY_MS
    return out


_FIELDS = PriceKline.__slots__


def encode_price_kline(codec: AvroCodec, k: PriceKline) -> bytes:
    return codec.encode(PRICE_KLINE, {name: getattr(k, name) for name in _FIELDS})


def price_kline_from_avro(record: dict[str, Any]) -> PriceKline:
    try:
        return PriceKline(**{field: record[field] for field in _FIELDS})
    except (KeyError, TypeError) as exc:
        raise UndecodableRecord(f"{PRICE_KLINE} fields do not fit: {exc}") from None


_RANGE_FIELDS = EmptyRange.__slots__


def encode_price_empty_range(codec: AvroCodec, e: PriceEmptyRange) -> bytes:
    record = {name: getattr(e.range, name) for name in _RANGE_FIELDS}
    return codec.encode(PRICE_EMPTY_RANGE, {"kind": e.kind, **record})


def price_empty_range_from_avro(record: dict[str, Any]) -> PriceEmptyRange:
    try:
        return PriceEmptyRange(
            record["kind"], EmptyRange(**{field: record[field] for field in _RANGE_FIELDS})
        )
    except (KeyError, TypeError, InvalidKline) as exc:
        raise UndecodableRecord(f"{PRICE_EMPTY_RANGE} fields do not fit: {exc}") from None


def enabled_kinds(cfg: FuturesConfigLike) -> list[PriceKind]:
    """The price kinds the ``futures`` section turns on, in PRICE_KINDS order."""
    return [k for k in PRICE_KINDS if getattr(cfg.futures, CONFIG_KEYS[k])]
