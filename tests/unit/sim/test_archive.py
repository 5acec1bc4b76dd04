"""Archive paths, publication times, header rule, deterministic zips, checksums."""

from __future__ import annotations

import hashlib
import io
import zipfile

import pytest

from qryptify.pairs import DAY_MS
from sim.archive import (
    CSV_HEADER,
    HEADER_SINCE_MS,
    archive_ready_ms,
    archive_url_path,
    build_zip,
    corrupt,
    parse_archive_path,
)

JAN_2024 = 1_704_067_200_000


def test_monthly_and_daily_paths_parse() -> None:
    m = parse_archive_path("/data/futures/um/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01.zip")
    assert m is not None
    assert (m.kind, m.symbol, m.interval, m.start_ms, m.checksum) == (
        "monthly",
        "BTCUSDT",
        "1m",
        JAN_2024,
        False,
    )
    assert m.end_ms == JAN_2024 + 31 * DAY_MS and m.csv_name == "BTCUSDT-1m-2024-01.csv"
    d = parse_archive_path(
        "/data/futures/um/daily/klines/ETHUSDT/1h/ETHUSDT-1h-2024-02-29.zip.CHECKSUM"
    )
    assert d is not None and d.checksum and d.end_ms - d.start_ms == DAY_MS
    mo = parse_archive_path("/data/futures/um/monthly/klines/BTCUSDT/1mo/BTCUSDT-1mo-2024-01.zip")
    assert mo is not None and mo.interval == "1M"


@pytest.mark.parametrize(
    "path",
    [
        "/data/futures/um/monthly/klines/BTCUSDT/1M/BTCUSDT-1M-2024-01.zip",  # 1M spelled 1mo
        "/data/futures/um/daily/klines/BTCUSDT/1w/BTCUSDT-1w-2024-01-01.zip",  # no daily 1w
        "/data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2023-02-29.zip",  # no such day
        "/data/futures/um/monthly/klines/BTCUSDT/1m/ETHUSDT-1m-2024-01.zip",  # name mismatch
        "/data/futures/um/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-01.zip",  # kind mismatch
        "/data/futures/um/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-13.zip",
        "/data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01.zip",
    ],
)
def test_bad_paths_do_not_parse(path: str) -> None:
    assert parse_archive_path(path) is None


def test_url_builder_matches_parser() -> None:
    path = archive_url_path("monthly", "BTCUSDT", "1M", JAN_2024)
    assert path == "/data/futures/um/monthly/klines/BTCUSDT/1mo/BTCUSDT-1mo-2024-01.zip"
    daily = archive_url_path("daily", "BTCUSDT", "1m", JAN_2024 + DAY_MS)
    assert daily.endswith("/BTCUSDT-1m-2024-01-02.zip")
    parsed = parse_archive_path(daily)
    assert parsed is not None and parsed.start_ms == JAN_2024 + DAY_MS


def test_files_appear_only_after_their_period_and_candles_end() -> None:
    daily = parse_archive_path(archive_url_path("daily", "BTCUSDT", "1m", JAN_2024))
    monthly = parse_archive_path(archive_url_path("monthly", "BTCUSDT", "1m", JAN_2024))
    weekly = parse_archive_path(archive_url_path("monthly", "BTCUSDT", "1w", JAN_2024))
    assert daily is not None and monthly is not None and weekly is not None
    # Dailies some hours into the next day.
    assert JAN_2024 + DAY_MS + 8 * 3_600_000 < archive_ready_ms(daily) < JAN_2024 + 2 * DAY_MS
    assert archive_ready_ms(monthly) > monthly.end_ms
    # The week opening Mon 2024-01-29 closes 2024-02-05: the monthly 1w file waits for it.
    assert archive_ready_ms(weekly) >= JAN_2024 + (28 + 7) * DAY_MS


def test_header_only_on_newer_files_and_zip_is_deterministic() -> None:
    lines = ["1,2.00,3.00,1.00,2.50,10.000,59999,25.00000,3,5.000,12.50000,0"]
    new = parse_archive_path(archive_url_path("monthly", "BTCUSDT", "1m", JAN_2024))
    old = parse_archive_path(archive_url_path("monthly", "BTCUSDT", "1m", HEADER_SINCE_MS - DAY_MS))
    assert new is not None and old is not None
    for file, header in ((new, True), (old, False)):
        built = build_zip(file, lines)
        assert built == build_zip(file, lines)  # byte-identical, so the checksum is stable
        assert built.sha256 == hashlib.sha256(built.zip_bytes).hexdigest()
        with zipfile.ZipFile(io.BytesIO(built.zip_bytes)) as zf:
            assert zf.namelist() == [file.csv_name]
            text = zf.read(file.csv_name).decode()
        expected = ([CSV_HEADER] if header else []) + lines
        assert text.splitlines() == expected
        assert built.checksum_text(file.zip_name) == f"{built.sha256}  {file.zip_name}\n"


def test_corrupt_changes_the_checksum() -> None:
    file = parse_archive_path(archive_url_path("daily", "BTCUSDT", "1m", JAN_2024))
    assert file is not None
    built = build_zip(file, ["1,2,3,1,2,1,59999,2,1,1,1,0"])
    bad = corrupt(built.zip_bytes)
    assert len(bad) == len(built.zip_bytes)
    assert hashlib.sha256(bad).hexdigest() != built.sha256
