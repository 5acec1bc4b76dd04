from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastavro.schema import fingerprint

from qryptify.avro import (
    EMPTY_RANGE,
    KLINE,
    SOE_MAGIC,
    AvroCodec,
    KlineCodec,
    SchemaCatalogue,
    load_schema,
    schemas_dir,
)
from qryptify.errors import UndecodableRecord
from qryptify.kline import EmptyRange
from tests.conftest import T0, make_kline


def test_crc64_avro_matches_the_spec_test_vector() -> None:
    # Avro spec: the fingerprint of "null" is 0x63dd24e7cc258f8a (little-endian 8a8f25cc…).
    assert fingerprint('"null"', "CRC-64-AVRO") == "8a8f25cce724dd63"


def test_kline_round_trip_single_object_encoding() -> None:
    codec = KlineCodec()
    k = make_kline(source="ws")
    data = codec.encode(k)
    assert data[:2] == SOE_MAGIC
    version = codec.avro.catalogue.current[KLINE]
    assert data[2:10] == version.fingerprint
    assert codec.decode(data) == k


def test_empty_range_round_trip() -> None:
    codec = KlineCodec()
    r = EmptyRange("BTCUSDT", "1m", T0, T0 + 3_600_000, T0 + 7_200_000)
    assert codec.decode(codec.encode(r)) == r


def test_a_registry_framed_value_is_not_accepted() -> None:
    # No schema registry exists in this project: a Confluent-framed value (magic 0 + id) is
    # reported as a framing it does not speak, never guessed at.
    with pytest.raises(UndecodableRecord, match="not C3 01"):
        KlineCodec().decode(b"\x00\x00\x00\x00\x07" + KlineCodec().encode(make_kline())[10:])


def test_reader_with_added_defaulted_field_reads_old_records(tmp_path: Path) -> None:
    old_text = (schemas_dir() / "kline.avsc").read_text()
    old = KlineCodec()
    data = old.encode(make_kline())

    new_schema = json.loads(old_text)
    new_schema["fields"].append({"name": "venue", "type": "string", "default": "binance-um"})
    (tmp_path / "history").mkdir()
    (tmp_path / "history" / "kline.v1.avsc").write_text(old_text)
    (tmp_path / "kline.avsc").write_text(json.dumps(new_schema))
    (tmp_path / "empty_range.avsc").write_text((schemas_dir() / "empty_range.avsc").read_text())
    reader = AvroCodec(SchemaCatalogue.from_dir(tmp_path))
    name, record = reader.decode(data)
    assert name == KLINE
    assert record["venue"] == "binance-um"
    assert record["open_time"] == T0
    assert load_schema(old_text).fingerprint != reader.catalogue.current[KLINE].fingerprint


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "empty value"),
        (b"garbage!", "unknown framing"),
        (b"\xc3\x01\x00", "too short"),
        (b"\xc3\x01" + b"\x00" * 8 + b"\x02", "unknown schema fingerprint"),
        (b"\x00\x00\x00\x00\x07abc", "unknown framing"),
    ],
)
def test_bad_bytes_raise_one_typed_error(data: bytes, fragment: str) -> None:
    with pytest.raises(UndecodableRecord, match=fragment):
        KlineCodec().decode(data)


def test_truncated_and_padded_bodies() -> None:
    codec = KlineCodec()
    good = codec.encode(make_kline())
    with pytest.raises(UndecodableRecord, match="does not decode"):
        codec.decode(good[:-7])
    with pytest.raises(UndecodableRecord, match="trailing bytes"):
        codec.decode(good + b"\x00")


def test_a_record_of_another_known_type_is_not_a_kline_event() -> None:
    codec = KlineCodec()
    data = codec.avro.encode(
        "io.qryptify.binance.futures.SourceOffset",
        {"symbol": "BTCUSDT", "interval": "1m", "last_open_time": T0, "updated_at": T0},
    )
    with pytest.raises(UndecodableRecord, match="not a kline event"):
        codec.decode(data)
    assert EMPTY_RANGE in codec.avro.catalogue.current
