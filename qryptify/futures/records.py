"""Every record type of the futures topic: decode, encode, check (dispatch by Avro name)."""

from __future__ import annotations

from qryptify.avro import AvroCodec
from qryptify.errors import UndecodableRecord
from qryptify.futures.funding import (
    FUNDING_RATE,
    FundingRate,
    encode_funding,
    record_from_avro,
    validate_funding,
)
from qryptify.futures.price import (
    PRICE_KLINE,
    PriceKline,
    encode_price_kline,
    price_kline_from_avro,
    validate_price_kline,
)

FuturesRecord = FundingRate | PriceKline


def decode(codec: AvroCodec, value: bytes) -> FuturesRecord:
    """A futures topic value → its record; UndecodableRecord for anything else."""
    name, record = codec.decode(value)
    if name == PRICE_KLINE:
        return price_kline_from_avro(record)
    if name == FUNDING_RATE:
        return record_from_avro(name, record)
    raise UndecodableRecord(f"record type {name} is not a futures record")


def encode(codec: AvroCodec, record: FuturesRecord) -> bytes:
    if isinstance(record, PriceKline):
        return encode_price_kline(codec, record)
    return encode_funding(codec, record)


def validate(record: FuturesRecord) -> FuturesRecord:
    """The record unchanged, or InvalidFuturesRecord naming what is wrong."""
    if isinstance(record, PriceKline):
        return validate_price_kline(record)
    return validate_funding(record)
