"""How ``qryptify tap --futures`` decodes and prints futures records (the futures topic)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from qryptify.avro import AvroCodec
from qryptify.futures.funding import FundingRate, record_from_avro

CSV_FIELDS = (
    "type", "symbol", "funding_time", "funding_rate", "mark_price", "interval_hours", "source",
    "ingested_at", "partition", "offset",
)  # fmt: skip
_TABLE = "{:<24} {:<16} {:>14} {:>18} {:>6} {:<7} {:>12}"
TABLE_HEADER = _TABLE.format(
    "funding_time (UTC)", "symbol", "rate", "mark_price", "hours", "source", "p@offset"
)

FuturesRecord = FundingRate


def decode(codec: AvroCodec, value: bytes) -> FuturesRecord:
    """A futures topic value → its record; UndecodableRecord when it is not one."""
    return record_from_avro(*codec.decode(value))


def fields(record: FuturesRecord, partition: int, offset: int) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "funding"}
    out.update({name: getattr(record, name) for name in FundingRate.__slots__})
    out["partition"] = partition
    out["offset"] = offset
    return out


def table_line(record: FuturesRecord, partition: int, offset: int) -> str:
    when = datetime.fromtimestamp(record.funding_time / 1000, UTC)
    return _TABLE.format(
        when.isoformat(timespec="milliseconds")[:-6] + "Z",
        record.symbol,
        record.funding_rate,
        record.mark_price or "-",
        record.interval_hours if record.interval_hours is not None else "-",
        record.source,
        f"{partition}@{offset}",
    )
