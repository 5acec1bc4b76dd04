"""How ``qryptify tap --futures`` decodes and prints futures records (the futures topic)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from qryptify.avro import AvroCodec
from qryptify.futures import records
from qryptify.futures.funding import FundingRate
from qryptify.futures.price import PriceEmptyRange, PriceKline
from qryptify.futures.records import FuturesRecord
from qryptify.kline import EmptyRange

CSV_FIELDS = (
    "type", "symbol", "interval", "time", "funding_rate", "mark_price", "interval_hours",
    "open", "high", "low", "close", "samples", "source", "ingested_at", "partition", "offset",
    "kind", "end_time", "confirmed_at",
)  # fmt: skip
_TABLE = "{:<24} {:<8} {:<20} {:>16} {:>16} {:>16} {:>16} {:<7} {:>12}"
TABLE_HEADER = _TABLE.format(
    "time (UTC)",
    "type",
    "series",
    "open | rate",
    "high | mark",
    "low",
    "close",
    "source",
    "p@offset",
)


def decode(codec: AvroCodec, value: bytes) -> FuturesRecord:
    """A futures topic value → its record; UndecodableRecord when it is not one."""
    return records.decode(codec, value)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def fields(record: FuturesRecord, partition: int, offset: int) -> dict[str, Any]:
    out: dict[str, Any]
    if isinstance(record, PriceEmptyRange):
        # The klines topic's empty_range fields, with the kind (the series' key names it).
        out = {"type": "empty_range", "kind": record.kind}
        out.update({name: getattr(record.range, name) for name in EmptyRange.__slots__})
        out["time"] = record.range.start_time
    elif isinstance(record, PriceKline):
        out = {"type": record.kind}
        out.update({name: getattr(record, name) for name in PriceKline.__slots__})
        out["time"] = record.open_time
    else:
        out = {"type": "funding"}
        out.update({name: getattr(record, name) for name in FundingRate.__slots__})
        out["time"] = record.funding_time
    out["partition"] = partition
    out["offset"] = offset
    return out


def table_line(record: FuturesRecord, partition: int, offset: int) -> str:
    where = f"{partition}@{offset}"
    if isinstance(record, PriceEmptyRange):
        e = record.range
        series = f"{e.symbol}/{e.interval} {record.kind}"
        return (
            f"{_iso(e.start_time):<24} {'empty':<8} {series:<20} until {_iso(e.end_time)}"
            f" (exchange-confirmed)  {where}"
        )
    if isinstance(record, PriceKline):
        return _TABLE.format(
            _iso(record.open_time), record.kind, f"{record.symbol}/{record.interval}",
            record.open, record.high, record.low, record.close, record.source, where,
        )  # fmt: skip
    hours = "-" if record.interval_hours is None else f"{record.interval_hours}h"
    return _TABLE.format(
        _iso(record.funding_time), "funding", f"{record.symbol} ({hours})", record.funding_rate,
        record.mark_price or "-", "", "", record.source, where,
    )  # fmt: skip
