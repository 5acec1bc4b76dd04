"""The bulk archive (data.binance.vision): monthly and daily kline zips, ``.CHECKSUM`` verified.

Layout::

    data/futures/um/monthly/klines/SYM/IVL/SYM-IVL-YYYY-MM.zip[.CHECKSUM]
    data/futures/um/daily/klines/SYM/IVL/SYM-IVL-YYYY-MM-DD.zip[.CHECKSUM]

``1M`` is spelled ``1mo`` in paths. A zip holds one CSV of the 12 REST columns, with a header
row on files from about mid-2022 and without one before; timestamps are 13-digit ms (16-digit
µs are accepted defensively). A ``.CHECKSUM`` is ``<sha256 hex>␠␠<zip name>``.

``ArchiveClient.fetch(file)`` returns the file's klines (source ``archive``), ``None`` when the
file is not published (404), and raises ``ArchiveError`` when it is corrupt (checksum mismatch
after a second download, bad zip, bad CSV — naming the file and line). Verified zips are kept
in a cache directory, written atomically (temp file + rename), keyed by the file's path below
the archive root (not by host, port or mirror spelling), and reused only while the published
``.CHECKSUM`` is unchanged: every use first fetches the published checksum (a few bytes, no
request weight). Binance re-uploads corrected files, so a changed checksum means the cached
copy is stale: the file is downloaded again, verified, and counted as a correction.
"""

from __future__ import annotations

import asyncio
import calendar
import hashlib
import io
import itertools
import logging
import operator
import os
import re
import tempfile
import zipfile
import zlib
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx

from qryptify import native
from qryptify.avro import EncodedKlines, KlineCodec, kline_encoder
from qryptify.binance.bounded import get_bounded
from qryptify.config import ArchiveConfig
from qryptify.errors import ArchiveError, MalformedPayload
from qryptify.kline import Kline
from qryptify.pairs import DAY_MS, FIXED_INTERVAL_MS, INTERVALS

logger = logging.getLogger(__name__)

Kind = Literal["monthly", "daily"]
CSV_HEADER_START = "open_time"
_HEADER_START = CSV_HEADER_START.encode()
#: Intervals that have daily files (the official download scripts' DAILY_INTERVALS).
DAILY_INTERVALS: tuple[str, ...] = tuple(
    i for i in INTERVALS if i in FIXED_INTERVAL_MS and FIXED_INTERVAL_MS[i] <= DAY_MS
)
#: Caps on what one archive file may occupy: a monthly 1m zip is ~2 MB, its CSV ~6 MB.
MAX_ZIP_BYTES = 64 * 1024 * 1024
MAX_CSV_BYTES = 256 * 1024 * 1024
MAX_CHECKSUM_BYTES = 4096
_CHECKSUM_RE = re.compile(r"^([0-9a-fA-F]{64})\s+\*?(\S+)\s*$")
_MICROS_THRESHOLD = 10**14  # 16-digit values are µs (2286-11-20 in ms)
_DEC = r"\s*(-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)\s*"
_INT = r"\s*([0-9]+)\s*"
#: One well-formed CSV row (the 12th column, "ignore", is free text).
_ROW_RE = re.compile(
    rf"^{_INT},{_DEC},{_DEC},{_DEC},{_DEC},{_DEC},{_INT},{_DEC},{_INT},{_DEC},{_DEC}(?:,[^,]*)?$"
)
_FAST_DEC = rb"(-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)"
_FAST_TIME = rb"([0-9]{1,14})"  # < 10**14: milliseconds, never the µs that _ms_int divides
_FAST_COUNT = rb"([0-9]{1,18})"  # < 10**18: fits an Avro long
#: The fast path's form of one data line, matched line by line over the whole file (MULTILINE):
#: no whitespace, and no character ``str.splitlines`` breaks on, so a match is one whole line.
#: Every line it matches, ``_ROW_RE`` matches too, with the same groups.
_FAST_ROW_RE = re.compile(
    rb"^" + rb",".join((_FAST_TIME, *[_FAST_DEC] * 5, _FAST_TIME, _FAST_DEC, _FAST_COUNT))
    + rb"," + _FAST_DEC + rb"," + _FAST_DEC + rb"(?:,[^,\n\r\x0b\x0c\x1c\x1d\x1e]*)?$",
    re.MULTILINE,
)  # fmt: skip


def path_interval(interval: str) -> str:
    return "1mo" if interval == "1M" else interval


def month_start(ts_ms: int) -> int:
    dt = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    return calendar.timegm((dt.year, dt.month, 1, 0, 0, 0)) * 1000


def next_month(month_ms: int) -> int:
    dt = datetime.fromtimestamp(month_ms / 1000, tz=UTC)
    year, month = (dt.year + 1, 1) if dt.month == 12 else (dt.year, dt.month + 1)
    return calendar.timegm((year, month, 1, 0, 0, 0)) * 1000


@dataclass(frozen=True, slots=True)
class ArchiveFile:
    """One archive zip: the candles of ``symbol``/``interval`` opening in [start_ms, end_ms)."""

    kind: Kind
    symbol: str
    interval: str
    start_ms: int
    end_ms: int

    @classmethod
    def monthly(cls, symbol: str, interval: str, ts_ms: int) -> ArchiveFile:
        start = month_start(ts_ms)
        return cls("monthly", symbol, interval, start, next_month(start))

    @classmethod
    def daily(cls, symbol: str, interval: str, ts_ms: int) -> ArchiveFile:
        if interval not in DAILY_INTERVALS:
            raise ValueError(f"no daily archive files for interval {interval}")
        start = ts_ms - ts_ms % DAY_MS
        return cls("daily", symbol, interval, start, start + DAY_MS)

    @property
    def zip_name(self) -> str:
        dt = datetime.fromtimestamp(self.start_ms / 1000, tz=UTC)
        stamp = f"{dt:%Y-%m}" if self.kind == "monthly" else f"{dt:%Y-%m-%d}"
        return f"{self.symbol}-{path_interval(self.interval)}-{stamp}.zip"

    @property
    def csv_name(self) -> str:
        return self.zip_name.removesuffix(".zip") + ".csv"

    @property
    def path(self) -> str:
        """URL path below the archive endpoint (no leading slash)."""
        ivl = path_interval(self.interval)
        return f"data/futures/um/{self.kind}/klines/{self.symbol}/{ivl}/{self.zip_name}"

    def __str__(self) -> str:
        return self.zip_name


def parse_checksum(text: str, zip_name: str) -> str:
    """The sha256 hex of a ``.CHECKSUM`` body; raises ArchiveError unless it names the zip."""
    lines = [line for line in text.splitlines() if line.strip()]
    match = _CHECKSUM_RE.match(lines[0]) if len(lines) == 1 else None
    if match is None:
        raise ArchiveError(zip_name + ".CHECKSUM", f"not '<sha256>  <name>': {text[:100]!r}")
    if match.group(2) != zip_name:
        raise ArchiveError(zip_name + ".CHECKSUM", f"names {match.group(2)!r}, not {zip_name!r}")
    return match.group(1).lower()


def verify_checksum(data: bytes, sha256_hex: str, name: str) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256_hex.lower():
        raise ArchiveError(name, f"sha256 {actual} does not match .CHECKSUM {sha256_hex}")


def read_zip(data: bytes, file: ArchiveFile, limit: int | None = None) -> bytes:
    """The CSV member of a verified zip, inflated up to ``limit`` bytes (default
    ``MAX_CSV_BYTES``): a member declaring or inflating to more is refused as it is read, so a
    zip bomb never reaches memory."""
    limit = MAX_CSV_BYTES if limit is None else limit
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
            if len(names) != 1:
                raise ArchiveError(file.zip_name, f"expected one CSV member, found {names[:5]}")
            if names[0] != file.csv_name:
                logger.warning("archive %s holds %s, not %s", file, names[0], file.csv_name)
            declared = zf.getinfo(names[0]).file_size
            if declared > limit:
                raise ArchiveError(
                    file.zip_name, f"member declares {declared} bytes, more than {limit}"
                )
            with zf.open(names[0]) as member:
                # The declared size may lie: read one byte past the limit to find out.
                csv = member.read(limit + 1)
            if len(csv) > limit:
                raise ArchiveError(file.zip_name, f"member inflates past {limit} bytes")
            return csv
    # zlib.error: corrupt deflate data; NotImplementedError / RuntimeError: unsupported or
    # encrypted members; ValueError: bad header fields (tests/unit/test_fuzz_inputs.py).
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        EOFError,
        OSError,
        zlib.error,
        NotImplementedError,
        RuntimeError,
        ValueError,
    ) as exc:
        raise ArchiveError(file.zip_name, f"not a readable zip: {exc}") from None


def _ms(value: str) -> str:
    """13-digit ms stay; 16-digit µs become ms (defensive: futures files use ms)."""
    value = value.strip()
    if value.isdigit() and int(value) >= _MICROS_THRESHOLD:
        return str(int(value) // 1000)
    return value


def _ms_int(value: str) -> int:
    number = int(value)
    return number // 1000 if number >= _MICROS_THRESHOLD else number


def parse_csv(
    data: bytes, symbol: str, interval: str, ingested_at: int, name: str = "<csv>"
) -> list[Kline]:
    """Rows of an archive CSV (with or without the header) → Klines, source ``archive``.

    Raises ArchiveError naming the file and the 1-based line of the first bad row.
    """
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise ArchiveError(name, f"not ASCII text at byte {exc.start}") from None
    klines: list[Kline] = []
    number = 0
    try:
        for number, line in _lines(text):
            if number == 1 and line.startswith(CSV_HEADER_START):
                continue
            match = _ROW_RE.match(line)
            if match is not None:
                t, o, h, lo, c, v, ct, q, n, tb, tq = match.groups()
                klines.append(
                    Kline(
                        symbol,
                        interval,
                        _ms_int(t),
                        _ms_int(ct),
                        o,
                        h,
                        lo,
                        c,
                        v,
                        q,
                        int(n),
                        tb,
                        tq,
                        "archive",
                        ingested_at,
                    )  # fmt: skip
                )
                continue
            # Not well-formed: the slow path names the bad column.
            fields = line.split(",")
            if len(fields) not in (11, 12):
                raise ArchiveError(f"{name}:{number}", f"expected 12 columns, got {len(fields)}")
            fields[0] = _ms(fields[0])
            fields[6] = _ms(fields[6])
            try:
                klines.append(Kline.from_archive_row(symbol, interval, fields, ingested_at))
            except MalformedPayload as exc:
                raise ArchiveError(f"{name}:{number}", exc.reason) from None
    except ValueError as exc:  # int() of a number with more than 4300 digits
        raise ArchiveError(f"{name}:{number}", f"number out of range: {exc}") from None
    for prev, cur in zip(klines, klines[1:], strict=False):
        if cur.open_time <= prev.open_time:
            raise ArchiveError(name, f"rows not ascending: {cur.open_time} after {prev.open_time}")
    return klines


def parse_csv_encoded(
    data: bytes,
    symbol: str,
    interval: str,
    ingested_at: int,
    codec: KlineCodec,
    name: str = "<csv>",
    *,
    native_ok: bool = True,
) -> EncodedKlines:
    """``parse_csv``, straight to topic values: the same rows accepted, the same errors.
    The plain-file case runs in the compiled core when it is active (``native_ok=False``:
    never, for tests comparing the two).

    The fast path takes a file whose every line is a plain data row (``_FAST_ROW_RE``, with an
    optional header first) and encodes the matched columns without building Klines. Anything
    else (whitespace, blank lines, µs times, non-ASCII, a bad row) goes through ``parse_csv``,
    which accepts or names the bad line exactly as before.
    """
    encoder = kline_encoder(codec)
    if encoder is not None and native.MODULE is not None and native_ok:
        # The compiled twin of _fast_rows + encode_rows (tests/unit/native/test_archive_csv.py).
        head, tail = encoder.row_frame(symbol, interval, "archive", ingested_at)
        found = native.MODULE.archive_csv_values(data, _HEADER_START, head, tail)
        if found is not None:
            return _ascending(name, EncodedKlines(symbol, interval, *found))
    rows = _fast_rows(data) if encoder is not None else None
    if encoder is None or rows is None:
        klines = parse_csv(data, symbol, interval, ingested_at, name)
        try:
            values = [codec.encode(k) for k in klines]
        except OverflowError as exc:  # a count beyond an Avro long: the file is unusable
            raise ArchiveError(name, f"number out of range: {exc}") from None
        return EncodedKlines(
            symbol,
            interval,
            [k.open_time for k in klines],
            [k.close_time for k in klines],
            values,
        )
    opens, closes, values = encoder.encode_rows(symbol, interval, "archive", ingested_at, rows)
    return _ascending(name, EncodedKlines(symbol, interval, opens, closes, values))


def _ascending(name: str, rows: EncodedKlines) -> EncodedKlines:
    opens = rows.open_times
    if not all(map(operator.lt, opens, opens[1:])):
        for prev, cur in itertools.pairwise(opens):
            if cur <= prev:
                raise ArchiveError(name, f"rows not ascending: {cur} after {prev}")
    return rows


def _fast_rows(data: bytes) -> list[Any] | None:
    """Every data line's 11 columns, or None unless every line is a plain row."""
    if not data.isascii():
        return None
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")  # one line break for splitlines too
    body = data
    if data.startswith(CSV_HEADER_START.encode()):
        cut = data.find(b"\n")
        header = data if cut < 0 else data[:cut]
        if any(c in header for c in b"\r\x0b\x0c\x1c\x1d\x1e"):
            return None  # splitlines would see more than one line in it
        body = b"" if cut < 0 else data[cut + 1 :]
    rows = _FAST_ROW_RE.findall(body)
    # A match never spans a line break, so as many matches as lines means every line matched.
    lines = body.count(b"\n") + (0 if not body or body.endswith(b"\n") else 1)
    return rows if len(rows) == lines else None


def _lines(text: str) -> Iterator[tuple[int, str]]:
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line:
            yield number, line


@dataclass(slots=True)
class ArchiveStats:
    downloaded: int = 0  # zips fetched and verified
    cached: int = 0  # zips reused from the cache (published checksum unchanged)
    checksums: int = 0  # published .CHECKSUM requests
    corrections: int = 0  # cached zips whose published checksum changed (re-uploaded)
    missing: int = 0  # 404 (not published / removed)
    corrupt: int = 0  # checksum mismatch or unreadable (each attempt)
    bytes: int = 0
    rows: int = 0


class ArchiveClient:
    """Downloads, verifies, caches and parses archive files over one pooled HTTP client."""

    def __init__(
        self,
        cfg: ArchiveConfig,
        *,
        cache_dir: Path | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 120.0,
        max_connections: int = 8,
    ) -> None:
        self.cfg = cfg
        self.cache_dir = cache_dir or default_cache_dir(cfg)
        self.stats = ArchiveStats()
        #: Per file path, the sha256 of the content the client last returned (or None).
        self.used: dict[str, str] = {}
        self._http = httpx.AsyncClient(
            base_url=cfg.endpoint.rstrip("/") + "/",
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=max_connections),
            transport=transport,
            follow_redirects=True,
            event_hooks={"request": [self._same_host]},
        )
        self._host = httpx.URL(cfg.endpoint).host

    async def _same_host(self, request: httpx.Request) -> None:
        """Redirects stay on the archive's host: a file is never fetched from elsewhere."""
        if request.url.host != self._host:
            raise ArchiveError(
                request.url.path, f"redirect to another host ({request.url.host}) refused"
            )

    async def __aenter__(self) -> ArchiveClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def cache_path(self, file: ArchiveFile) -> Path:
        """Where the file is cached: its path below the archive root, whichever host, port or
        mirror served it (the same file from two endpoints is one cache entry)."""
        return self.cache_dir / file.path

    def cached_checksum(self, file: ArchiveFile) -> str | None:
        """The sha256 of the cached copy (its stored .CHECKSUM), None when not cached."""
        path = self.cache_path(file)
        try:
            text = path.with_name(path.name + ".CHECKSUM").read_text(encoding="ascii")
            return parse_checksum(text, file.zip_name)
        except (OSError, ArchiveError, UnicodeDecodeError):
            return None

    def cached_klines(self, file: ArchiveFile, ingested_at: int, sha256_hex: str) -> list[Kline]:
        """The klines of the cached copy if it is the content ``sha256_hex`` names (no
        network); an empty list when no such copy is cached or it does not parse."""
        path = self.cache_path(file)
        try:
            data = path.read_bytes()
            verify_checksum(data, sha256_hex, file.zip_name)
            return parse_csv(
                read_zip(data, file), file.symbol, file.interval, ingested_at, file.csv_name
            )
        except (OSError, ArchiveError):
            return []

    async def published_checksum(self, file: ArchiveFile) -> tuple[str, bytes] | None:
        """The published ``.CHECKSUM``: (sha256 hex, raw body); None when not published."""
        sums = await self._get(file.path + ".CHECKSUM", MAX_CHECKSUM_BYTES)
        self.stats.checksums += 1
        if sums is None:
            return None
        try:
            return parse_checksum(sums.decode("ascii", "replace"), file.zip_name), sums
        except ArchiveError:
            self.stats.corrupt += 1
            raise

    async def _csv(self, file: ArchiveFile) -> bytes | None:
        """The file's CSV (cached or downloaded, checksum verified); None if not published.

        The published checksum decides: a cached copy is used only when it is that content.
        File reads, checksums, fsyncs and unzipping run in worker threads: the event loop
        keeps publishing meanwhile."""
        published = await self.published_checksum(file)
        if published is None:
            self.stats.missing += 1
            self.used.pop(file.path, None)
            return None
        expected, sums = published
        data = await asyncio.to_thread(self._from_cache, file, expected)
        if data is None:
            data = await self._download(file, expected, sums)
            if data is None:
                self.used.pop(file.path, None)
                return None
        self.used[file.path] = expected
        return await asyncio.to_thread(read_zip, data, file)

    async def fetch(self, file: ArchiveFile, ingested_at: int) -> list[Kline] | None:
        """The file's klines; None if not published; ArchiveError if corrupt."""
        csv = await self._csv(file)
        if csv is None:
            return None
        klines = await asyncio.to_thread(
            parse_csv, csv, file.symbol, file.interval, ingested_at, file.csv_name
        )
        for k in klines:
            if not file.start_ms <= k.open_time < file.end_ms:
                raise ArchiveError(
                    file.zip_name, f"row {k.open_time} outside [{file.start_ms}, {file.end_ms})"
                )
        self.stats.rows += len(klines)
        return klines

    async def fetch_encoded(
        self, file: ArchiveFile, ingested_at: int, codec: KlineCodec
    ) -> EncodedKlines | None:
        """``fetch``, as topic values (``parse_csv_encoded``): the same checks and errors."""
        csv = await self._csv(file)
        if csv is None:
            return None
        rows = await asyncio.to_thread(
            parse_csv_encoded, csv, file.symbol, file.interval, ingested_at, codec, file.csv_name
        )
        opens = rows.open_times  # ascending: parse_csv_encoded checked
        if opens and not (file.start_ms <= opens[0] and opens[-1] < file.end_ms):
            first = opens[0] if opens[0] < file.start_ms else opens[bisect_left(opens, file.end_ms)]
            raise ArchiveError(
                file.zip_name, f"row {first} outside [{file.start_ms}, {file.end_ms})"
            )
        self.stats.rows += len(rows)
        return rows

    def _from_cache(self, file: ArchiveFile, published: str) -> bytes | None:
        """The cached zip if it is the content of the ``published`` checksum, else None; a
        cached copy of other content is a re-upload (a correction), logged and counted."""
        cached = self.cached_checksum(file)
        if cached is None:
            return None
        if cached != published:
            self.stats.corrections += 1
            logger.warning(
                "archive %s was re-uploaded (sha256 %s… → %s…): downloading it again",
                file,
                cached[:12],
                published[:12],
            )
            return None
        try:
            data = self.cache_path(file).read_bytes()
            verify_checksum(data, published, file.zip_name)
        except (OSError, ArchiveError):
            return None
        self.stats.cached += 1
        return data

    async def _get(self, path: str, limit: int = MAX_ZIP_BYTES) -> bytes | None:
        try:
            resp = await get_bounded(
                self._http, path, limit, lambda why: ArchiveError(path, f"download refused: {why}")
            )
        except httpx.HTTPError as exc:
            raise ArchiveError(path, f"download failed: {type(exc).__name__} {exc}") from None
        if resp.status_code in (403, 404):  # S3 answers 403 for missing keys without list
            return None
        if resp.status_code != 200:
            raise ArchiveError(path, f"HTTP {resp.status_code}")
        return resp.content

    async def _download(self, file: ArchiveFile, expected: str, sums: bytes) -> bytes | None:
        last: ArchiveError | None = None
        for _attempt in range(2):  # a corrupt transfer gets one more try
            data = await self._get(file.path)
            if data is None:
                self.stats.missing += 1
                return None
            try:
                await asyncio.to_thread(verify_checksum, data, expected, file.zip_name)
            except ArchiveError as exc:
                self.stats.corrupt += 1
                last = exc
                continue
            self.stats.downloaded += 1
            self.stats.bytes += len(data)
            await asyncio.to_thread(self._store, file, data, sums)
            return data
        assert last is not None  # noqa: S101 - the loop ran and failed
        raise last

    def _store(self, file: ArchiveFile, data: bytes, sums: bytes) -> None:
        path = self.cache_path(file)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, data)
            atomic_write(path.with_name(path.name + ".CHECKSUM"), sums)
        except OSError as exc:
            logger.warning("archive cache %s not written: %s", path, exc)


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temp file in the same directory and rename: never a half-written file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def default_cache_dir(cfg: ArchiveConfig) -> Path:
    if cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qryptify" / "archive"
