"""Funding rates: the record, its rules, and reading it from REST, the archive and the topic.

Pure (no I/O): REST bodies, archive CSV bytes and topic values in, ``FundingRate`` out.

- REST ``GET /fapi/v1/fundingRate`` rows: ``{"symbol", "fundingRate", "fundingTime",
  "markPrice"}`` (docs/futures.md); ``markPrice`` may be empty on old rows.
- Archive ``data/futures/um/monthly/fundingRate/SYM/SYM-fundingRate-YYYY-MM.zip``: CSV header
  ``calc_time,funding_interval_hours,last_funding_rate``, no mark price. Monthly files only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from qryptify.avro import NAMESPACE, AvroCodec
from qryptify.binance.archive import ArchiveFile, month_start, next_month
from qryptify.errors import InvalidFuturesRecord, MalformedPayload, PairError, UndecodableRecord
from qryptify.kline import SOURCES, Source
from qryptify.pairs import validate_symbol

FUNDING_RATE = f"{NAMESPACE}.FundingRate"
KIND = "funding"
#: Funding times outside [2010-01-01, 2200-01-01) are not Binance's (and would distort
#: TIMESTAMPTZ); such records go to the DLQ.
MIN_MS = 1_262_304_000_000
MAX_MS = 7_258_118_400_000
ARCHIVE_HEADER = "calc_time,funding_interval_hours,last_funding_rate"
_DECIMAL_RE = re.compile(r"-?[0-9]{1,30}(?:\.[0-9]{1,30})?")


@dataclass(frozen=True, slots=True)
class FundingRate:
    """One settled funding of one perpetual, as the exchange reports it."""

    symbol: str
    funding_time: int  # ms since epoch, UTC
    funding_rate: str  # decimal string, e.g. "0.00010000"
    mark_price: str | None  # REST only
    interval_hours: int | None  # archive only
    source: Source
    ingested_at: int  # ms

    @property
    def key(self) -> str:
        return f"{self.symbol}|{KIND}"


def validate_funding(f: FundingRate) -> FundingRate:
    """Return ``f`` or raise InvalidFuturesRecord naming the field."""
    where = f"{f.symbol!r:.30} {f.funding_time!r:.20}"
    try:
        validate_symbol(f.symbol)
    except PairError as exc:
        raise InvalidFuturesRecord(f"funding {where}: {exc.reason}") from None
    if type(f.funding_time) is not int or not MIN_MS <= f.funding_time < MAX_MS:
        raise InvalidFuturesRecord(f"funding {where}: funding_time outside 2010..2200")
    if not isinstance(f.funding_rate, str) or not _DECIMAL_RE.fullmatch(f.funding_rate):
        raise InvalidFuturesRecord(
            f"funding {where}: funding_rate {f.funding_rate!r:.40} is not a plain decimal"
        )
    if f.mark_price is not None and (
        not isinstance(f.mark_price, str)
        or not _DECIMAL_RE.fullmatch(f.mark_price)
        or f.mark_price.startswith("-")
    ):
        raise InvalidFuturesRecord(
            f"funding {where}: mark_price {f.mark_price!r:.40} is not a positive decimal"
        )
    if f.interval_hours is not None and (
        type(f.interval_hours) is not int or not 1 <= f.interval_hours <= 24
    ):
        raise InvalidFuturesRecord(
            f"funding {where}: interval_hours {f.interval_hours!r} not 1..24"
        )
    if f.source not in SOURCES:
        raise InvalidFuturesRecord(f"funding {where}: unknown source {f.source!r:.20}")
    if type(f.ingested_at) is not int or not 0 <= f.ingested_at < 2**63:
        raise InvalidFuturesRecord(f"funding {where}: ingested_at {f.ingested_at!r:.20}")
    return f


# -- REST --------------------------------------------------------------------------------------
def parse_rest(symbol: str, body: object, ingested_at: int) -> list[FundingRate]:
    """A ``/fapi/v1/fundingRate`` body → records, ascending; MalformedPayload if off-shape."""
    if not isinstance(body, list):
        raise MalformedPayload("rest", f"fundingRate body is not a list: {body!r:.80}")
    out: list[FundingRate] = []
    for row in body:
        if not isinstance(row, dict):
            raise MalformedPayload("rest", f"fundingRate row {row!r:.80}")
        time = row.get("fundingTime")
        rate = row.get("fundingRate")
        mark = row.get("markPrice")
        if row.get("symbol") != symbol:
            raise MalformedPayload("rest", f"fundingRate row for {row.get('symbol')!r:.30}")
        if type(time) is not int or not isinstance(rate, str):
            raise MalformedPayload("rest", f"fundingRate row {row!r:.120}")
        if mark is not None and not isinstance(mark, str):
            raise MalformedPayload("rest", f"fundingRate markPrice {mark!r:.40}")
        record = FundingRate(symbol, time, rate, mark or None, None, "rest", ingested_at)
        try:
            validate_funding(record)
        except InvalidFuturesRecord as exc:
            raise MalformedPayload("rest", exc.reason) from None
        if out and record.funding_time <= out[-1].funding_time:
            raise MalformedPayload("rest", f"fundingRate rows out of order at {time}")
        out.append(record)
    return out


# -- archive -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FundingArchiveFile(ArchiveFile):
    """``SYM-fundingRate-YYYY-MM.zip``: the fundings of one calendar month (monthly only)."""

    @classmethod
    def month(cls, symbol: str, ts_ms: int) -> FundingArchiveFile:
        start = month_start(ts_ms)
        return cls("monthly", symbol, "fundingRate", start, next_month(start))

    @property
    def zip_name(self) -> str:
        stamp = datetime.fromtimestamp(self.start_ms / 1000, tz=UTC).strftime("%Y-%m")
        return f"{self.symbol}-fundingRate-{stamp}.zip"

    @property
    def path(self) -> str:
        return f"data/futures/um/monthly/fundingRate/{self.symbol}/{self.zip_name}"


def parse_archive_csv(data: bytes, file: FundingArchiveFile, ingested_at: int) -> list[FundingRate]:
    """The CSV of one monthly fundingRate zip → records in the file's month, ascending.

    Raises MalformedPayload naming the file and line."""
    name = file.csv_name
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise MalformedPayload("archive", f"{name}: not ASCII") from None
    out: list[FundingRate] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or (number == 1 and line.startswith("calc_time")):
            continue
        parts = line.split(",")
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
            raise MalformedPayload("archive", f"{name} line {number}: {line[:80]!r}")
        time = int(parts[0])
        if time >= 10**14:  # 16-digit µs, defensively (binance-api.md §5)
            time //= 1000
        record = FundingRate(
            file.symbol, time, parts[2], None, int(parts[1]), "archive", ingested_at
        )
        try:
            validate_funding(record)
        except InvalidFuturesRecord as exc:
            raise MalformedPayload("archive", f"{name} line {number}: {exc.reason}") from None
        if not file.start_ms <= time < file.end_ms:
            raise MalformedPayload("archive", f"{name} line {number}: {time} outside the month")
        if out and time <= out[-1].funding_time:
            raise MalformedPayload("archive", f"{name} line {number}: rows out of order")
        out.append(record)
    return out


# -- topic values ------------------------------------------------------------------------------
_FIELDS = FundingRate.__slots__


def encode_funding(codec: AvroCodec, f: FundingRate) -> bytes:
    return codec.encode(FUNDING_RATE, {name: getattr(f, name) for name in _FIELDS})


def record_from_avro(name: str, record: dict[str, Any]) -> FundingRate:
    """A decoded Avro record → FundingRate; UndecodableRecord for any other record type."""
    if name != FUNDING_RATE:
        raise UndecodableRecord(f"record type {name} is not a futures record")
    try:
        return FundingRate(**{field: record[field] for field in _FIELDS})
    except (KeyError, TypeError) as exc:
        raise UndecodableRecord(f"{name} fields do not fit: {exc}") from None
