"""Archive contract: data.binance.vision layout, CSV columns, checksums, publication."""

from __future__ import annotations

import hashlib
import io
import zipfile

import httpx

from qryptify.pairs import DAY_MS, HOUR_MS
from sim.archive import CSV_HEADER, archive_url_path
from sim.server import SimulatorThread
from tests.integration.sim.helpers import START_MS

JAN_2024 = 1_704_067_200_000
JAN_2021 = 1_609_459_200_000


def read_zip(content: bytes) -> tuple[list[str], list[str]]:
    with zipfile.ZipFile(io.BytesIO(content)) as zf:
        names = zf.namelist()
        text = zf.read(names[0]).decode("ascii")
    return names, text.splitlines()


def as_rest(line: str) -> list[object]:
    cells = line.split(",")
    return [
        int(cells[0]),
        *cells[1:6],
        int(cells[6]),
        cells[7],
        int(cells[8]),
        *cells[9:11],
        cells[11],
    ]


def test_monthly_zip_checksum_and_rows_equal_truth(http: httpx.Client) -> None:
    path = archive_url_path("monthly", "BTCUSDT", "1h", JAN_2024)
    assert path == "/data/futures/um/monthly/klines/BTCUSDT/1h/BTCUSDT-1h-2024-01.zip"
    r = http.get(path)
    assert r.status_code == 200
    checksum = http.get(path + ".CHECKSUM").text
    assert checksum == f"{hashlib.sha256(r.content).hexdigest()}  BTCUSDT-1h-2024-01.zip\n"
    names, lines = read_zip(r.content)
    assert names == ["BTCUSDT-1h-2024-01.csv"]
    assert lines[0] == CSV_HEADER and len(CSV_HEADER.split(",")) == 12
    rows = [as_rest(line) for line in lines[1:]]
    assert len(rows) == 31 * 24
    truth = http.get(
        "/sim/truth",
        params={
            "symbol": "BTCUSDT",
            "interval": "1h",
            "start": JAN_2024,
            "end": JAN_2024 + 31 * DAY_MS,
        },
    ).json()
    assert rows == truth


def test_older_files_have_no_header(http: httpx.Client) -> None:
    r = http.get(archive_url_path("monthly", "ETHUSDT", "1d", JAN_2021))
    assert r.status_code == 200
    _, lines = read_zip(r.content)
    assert len(lines) == 31 and lines[0].split(",")[0] == str(JAN_2021)


def test_daily_file_and_1mo_spelling(http: httpx.Client) -> None:
    r = http.get("/data/futures/um/daily/klines/SOLUSDT/1m/SOLUSDT-1m-2024-08-30.zip")
    assert r.status_code == 200
    _, lines = read_zip(r.content)
    assert len(lines) == 1 + 1440
    r = http.get("/data/futures/um/monthly/klines/SOLUSDT/1mo/SOLUSDT-1mo-2024-07.zip")
    assert r.status_code == 200
    _, lines = read_zip(r.content)
    assert len(lines) == 2 and lines[1].startswith("1719792000000,")


def test_files_are_published_only_after_their_period(
    sim: SimulatorThread, http: httpx.Client
) -> None:
    # Sim time is 2024-09-01 00:00: August's last day is not out yet, nor September.
    yesterday = archive_url_path("daily", "BTCUSDT", "1m", START_MS - DAY_MS)
    missing = http.get(yesterday)
    assert missing.status_code == 404 and "NoSuchKey" in missing.text
    assert http.get(yesterday + ".CHECKSUM").status_code == 404
    assert http.get(archive_url_path("monthly", "BTCUSDT", "1m", START_MS)).status_code == 404
    http.post("/sim/clock", json={"advance_ms": 9 * HOUR_MS})
    assert http.get(yesterday).status_code == 200


def test_unknown_or_unlisted_files_are_404(http: httpx.Client) -> None:
    assert http.get(archive_url_path("monthly", "NOPEUSDT", "1m", JAN_2024)).status_code == 404
    assert (
        http.get(archive_url_path("monthly", "BTCUSDT", "1m", 1_546_300_800_000)).status_code == 404
    )
    assert (
        http.get("/data/futures/um/monthly/klines/BTCUSDT/1M/BTCUSDT-1M-2024-01.zip").status_code
        == 404
    )
    # A settled symbol: history present, nothing after settlement.
    assert (
        http.get(archive_url_path("monthly", "DELISTUSDT", "1d", 1_714_521_600_000)).status_code
        == 200
    )
    assert (
        http.get(archive_url_path("monthly", "DELISTUSDT", "1d", 1_717_200_000_000)).status_code
        == 404
    )
