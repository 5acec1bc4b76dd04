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
    PRICE_EMPTY_RANGE,
    PRICE_KLINE,
    PriceEmptyRange,
    PriceKline,
    encode_price_empty_range,
    encode_price_kline,
    price_empty_range_from_avro,
    price_kline_from_avro,
    validate_price_empty_range,
    validate_price_kline,
)

FuturesRecord = FundingRate | PriceKline | PriceEmptyRange


def decode(codec: AvroCodec, value: bytes) -> FuturesRecord:
    """A futures topic value → its record; UndecodableRecord for anything else."""
    name, record = codec.decode(value)
    if name == PRICE_KLINE:
        return price_kline_from_avro(record)
    if name == PRICE_EMPTY_RANGE:
        return price_empty_range_from_avro(record)
    if name == FUNDING_RATE:
        return record_from_avro(name, record)
    raise UndecodableRecord(f"record type {name} is not a futures record")


def encode(codec: AvroCodec, record: FuturesRecord) -> bytes:
    if isinstance(record, PriceKline):
        return encode_price_kline(codec, record)
    if isinstance(record, PriceEmptyRange):
        return encode_price_empty_range(codec, record)
    return encode_funding(codec, record)


def validate(record: FuturesRecord) -> FuturesRecord:
    """The record unchanged, or InvalidFuturesRecord naming what is wrong."""
    if isinstance(record, PriceKline):
        return validate_price_kline(record)
    if isinstance(record, PriceEmptyRange):
        return validate_price_empty_range(record)
    return validate_funding(record)
