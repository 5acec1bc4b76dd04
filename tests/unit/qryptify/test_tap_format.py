from __future__ import annotations

import csv
import io
import json

import pytest

from qryptify.commands.tap import CSV_FIELDS, TABLE_HEADER, Printer, iso_ms, parse_filter
from qryptify.errors import ConfigError
from qryptify.kline import EmptyRange
from tests.conftest import T0, make_kline


def test_iso_ms() -> None:
    assert iso_ms(T0 + 1) == "2024-01-01T00:00:00.001Z"


def test_json_lines_carry_every_field_and_the_origin() -> None:
    out = io.StringIO()
    k = make_kline()
    Printer("json", out).print(k, 2, 17)
    doc = json.loads(out.getvalue())
    assert doc["type"] == "kline" and doc["close"] == k.close and doc["open_time"] == T0
    assert (doc["partition"], doc["offset"]) == (2, 17)


def test_csv_has_one_header_then_rows() -> None:
    out = io.StringIO()
    printer = Printer("csv", out)
    printer.print(make_kline(), 0, 1)
    printer.print(EmptyRange("BTCUSDT", "1m", T0, T0 + 60_000, T0), 0, 2)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(rows[0]) == list(CSV_FIELDS)
    assert [r["type"] for r in rows] == ["kline", "empty_range"]
    assert rows[1]["end_time"] == str(T0 + 60_000) and rows[1]["close"] == ""


def test_table_prints_a_header_and_aligned_rows() -> None:
    out = io.StringIO()
    printer = Printer("table", out)
    printer.print(make_kline(), 1, 5)
    printer.print(EmptyRange("BTCUSDT", "1m", T0, T0 + 60_000, T0), 1, 6)
    lines = out.getvalue().splitlines()
    assert lines[0] == TABLE_HEADER
    assert lines[1].startswith("2024-01-01T00:00:00.000Z BTCUSDT/1m") and lines[1].endswith("1@5")
    assert "empty until 2024-01-01T00:01:00.000Z" in lines[2]


def test_pair_filter_accepts_the_config_spellings() -> None:
    assert parse_filter(["BTCUSDT/1m,ETHUSDT-1h", "SOLUSDT 4h"]) == {
        b"BTCUSDT|1m",
        b"ETHUSDT|1h",
        b"SOLUSDT|4h",
    }
    with pytest.raises(ConfigError, match="--pair"):
        parse_filter(["BTCUSDT/7m"])
