"""data.binance.vision, reproduced: paths, publication times, CSV and zip building (pure).

Layout (binance-api.md §5)::

    /data/futures/um/monthly/klines/SYM/IVL/SYM-IVL-YYYY-MM.zip[.CHECKSUM]
    /data/futures/um/daily/klines/SYM/IVL/SYM-IVL-YYYY-MM-DD.zip[.CHECKSUM]

``1M`` is spelled ``1mo`` in paths. Daily files exist for intervals up to ``1d`` only (as the
official download scripts assume). A file holds the candles that OPEN in its period. The CSV has
the 12 REST columns; files for periods starting on or after ``HEADER_SINCE_MS`` carry a header
row (BPD#246). A file is published some time after its period ends (dailies ~08:30 UTC the
next day, monthlies on the 2nd) and never before.
"""

from __future__ import annotations

import calendar
import hashlib
import io
import re
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime

from sim.grid import (
    DAY_MS,
    FIXED_INTERVAL_MS,
    HOUR_MS,
    INTERVALS,
    MINUTE_MS,
    align_open,
    next_open,
)

ARCHIVE_PREFIX = "/data/futures/um/"
CSV_HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
    "taker_buy_volume,taker_buy_quote_volume,ignore"
)
#: 2022-05-01 00:00 UTC: files for earlier periods have no header row.
HEADER_SINCE_MS = 1651363200000
DAILY_PUBLISH_DELAY_MS = 8 * HOUR_MS + 30 * MINUTE_MS
MONTHLY_PUBLISH_DELAY_MS = DAY_MS + 6 * HOUR_MS
DAILY_INTERVALS: tuple[str, ...] = tuple(
    i for i in INTERVALS if i in FIXED_INTERVAL_MS and FIXED_INTERVAL_MS[i] <= DAY_MS
)

_PATH_RE = re.compile(
    r"^/data/futures/um/(?P<kind>monthly|daily)/klines/(?P<sym>[A-Z0-9_]+)/(?P<ivl>[0-9]+[a-z]+)/"
    r"(?P<file>(?P=sym)-(?P=ivl)-(?P<y>[0-9]{4})-(?P<m>[0-9]{2})(?:-(?P<d>[0-9]{2}))?\.zip)"
    r"(?P<checksum>\.CHECKSUM)?$"
)


def path_interval(interval: str) -> str:
    return "1mo" if interval == "1M" else interval


def interval_from_path(text: str) -> str | None:
    if text == "1mo":
        return "1M"
    return text if text in FIXED_INTERVAL_MS else None


@dataclass(frozen=True, slots=True)
class ArchiveFile:
    """One archive zip (or its CHECKSUM sibling)."""

    kind: str  # "monthly" | "daily"
    symbol: str
    interval: str  # Binance spelling (1M, not 1mo)
    start_ms: int  # period start (inclusive)
    end_ms: int  # period end (exclusive)
    zip_name: str
    checksum: bool  # the request is for ``<zip>.CHECKSUM``

    @property
    def csv_name(self) -> str:
        return self.zip_name.removesuffix(".zip") + ".csv"

    @property
    def file_name(self) -> str:
        return self.zip_name + (".CHECKSUM" if self.checksum else "")

    @property
    def published_ms(self) -> int:
        delay = DAILY_PUBLISH_DELAY_MS if self.kind == "daily" else MONTHLY_PUBLISH_DELAY_MS
        return self.end_ms + delay

    @property
    def has_header(self) -> bool:
        return self.start_ms >= HEADER_SINCE_MS

    @property
    def key(self) -> str:
        ivl = path_interval(self.interval)
        return f"data/futures/um/{self.kind}/klines/{self.symbol}/{ivl}/{self.file_name}"


def parse_archive_path(path: str) -> ArchiveFile | None:
    """Parse a request path; None when it is not a well-formed kline archive path."""
    match = _PATH_RE.match(path)
    if not match:
        return None
    interval = interval_from_path(match["ivl"])
    if interval is None:
        return None
    kind = match["kind"]
    year, month = int(match["y"]), int(match["m"])
    day_text = match["d"]
    if not 1 <= month <= 12 or (kind == "daily") != (day_text is not None):
        return None
    if kind == "daily":
        if interval not in DAILY_INTERVALS:
            return None
        day = int(day_text)
        if not 1 <= day <= calendar.monthrange(year, month)[1]:
            return None
        start = calendar.timegm((year, month, day, 0, 0, 0)) * 1000
        end = start + DAY_MS
    else:
        start = calendar.timegm((year, month, 1, 0, 0, 0)) * 1000
        ny, nm = (year + 1, 1) if month == 12 else (year, month + 1)
        end = calendar.timegm((ny, nm, 1, 0, 0, 0)) * 1000
    return ArchiveFile(
        kind=kind,
        symbol=match["sym"],
        interval=interval,
        start_ms=start,
        end_ms=end,
        zip_name=match["file"],
        checksum=match["checksum"] is not None,
    )


def archive_url_path(kind: str, symbol: str, interval: str, period_start_ms: int) -> str:
    """The request path of the zip covering ``period_start_ms`` (for tests and tools)."""
    dt = datetime.fromtimestamp(period_start_ms / 1000, tz=UTC)
    ivl = path_interval(interval)
    stamp = f"{dt:%Y-%m}" if kind == "monthly" else f"{dt:%Y-%m-%d}"
    return f"{ARCHIVE_PREFIX}{kind}/klines/{symbol}/{ivl}/{symbol}-{ivl}-{stamp}.zip"


def archive_ready_ms(file: ArchiveFile) -> int:
    """When the file appears: after its period AND after every candle it holds has closed
    (a 1w candle opening on the 30th closes in the next month)."""
    delay = file.published_ms - file.end_ms
    last_close = next_open(file.interval, align_open(file.interval, file.end_ms - 1))
    return max(file.end_ms, last_close) + delay


@dataclass(frozen=True, slots=True)
class BuiltArchive:
    zip_bytes: bytes
    sha256: str

    def checksum_text(self, zip_name: str) -> str:
        """sha256sum's format: hex, two spaces, file name, newline."""
        return f"{self.sha256}  {zip_name}\n"


def build_zip(file: ArchiveFile, data: bytes | list[str]) -> BuiltArchive:
    """Deterministic zip with one CSV member (fixed timestamp → stable checksum).

    ``data`` is the CSV body without header: newline-terminated bytes or a list of lines.
    """
    body = data if isinstance(data, bytes) else "".join(f"{line}\n" for line in data).encode()
    csv_data = (CSV_HEADER + "\n").encode("ascii") + body if file.has_header and body else body
    published = datetime.fromtimestamp(file.published_ms / 1000, tz=UTC)
    info = zipfile.ZipInfo(
        file.csv_name,
        date_time=(
            published.year,
            published.month,
            published.day,
            published.hour,
            published.minute,
            published.second,
        ),
    )
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    buffer = io.BytesIO()
    # Level 1: a monthly 1m file compresses several times faster than level 6 at a slightly
    # larger size; the archive is throughput-bound in the benchmark and clients only need
    # valid deflate.
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(info, csv_data, compresslevel=1)
    packed = buffer.getvalue()
    return BuiltArchive(packed, hashlib.sha256(packed).hexdigest())


def corrupt(data: bytes) -> bytes:
    """Flip one byte in the middle: the zip no longer matches its CHECKSUM (nor its CRC)."""
    if not data:
        return b"\x00"
    mid = len(data) // 2
    return data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1 :]


def not_found_xml(key: str) -> str:
    """S3's body for a missing key (data.binance.vision is an S3 bucket behind CloudFront)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        "<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message>"
        f"<Key>{key}</Key></Error>"
    )
