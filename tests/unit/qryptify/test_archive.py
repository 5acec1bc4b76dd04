"""Archive files: paths, CHECKSUM, zip, CSV with and without header, the cached client."""

from __future__ import annotations

import asyncio
import hashlib
import io
import zipfile
from pathlib import Path

import httpx
import pytest

from qryptify.binance.archive import (
    ArchiveClient,
    ArchiveFile,
    atomic_write,
    parse_checksum,
    parse_csv,
    read_zip,
    verify_checksum,
)
from qryptify.config import ArchiveConfig
from qryptify.errors import ArchiveError
from sim.symbols import parse_time_ms

HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
    "taker_buy_quote_volume,ignore"
)
# Real UM rows (binance-api.md §7 B)
ROW1 = "1743465300000,82525.10,82562.00,82480.90,82517.50,224.504,1743465599999,18526765.98370,5026,134.351,11087473.79480,0"  # noqa: E501
ROW0 = "1743465000000,82517.50,82600.00,82500.00,82590.00,100.000,1743465299999,8259000.00000,2000,50.000,4129500.00000,0"  # noqa: E501


def test_paths_and_names() -> None:
    jan = parse_time_ms("2024-01-15T10:00:00Z")
    m = ArchiveFile.monthly("BTCUSDT", "1m", jan)
    assert m.path == "data/futures/um/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01.zip"
    assert (m.start_ms, m.end_ms) == (parse_time_ms("2024-01-01"), parse_time_ms("2024-02-01"))
    d = ArchiveFile.daily("ETHUSDT", "5m", jan)
    assert d.zip_name == "ETHUSDT-5m-2024-01-15.zip" and d.csv_name == "ETHUSDT-5m-2024-01-15.csv"
    assert ArchiveFile.monthly("BTCUSDT", "1M", jan).path.endswith("/1mo/BTCUSDT-1mo-2024-01.zip")
    with pytest.raises(ValueError):
        ArchiveFile.daily("BTCUSDT", "1w", jan)


@pytest.mark.parametrize("with_header", [True, False])
def test_csv_with_and_without_header(with_header: bool) -> None:
    text = "\n".join(([HEADER] if with_header else []) + [ROW0, ROW1]) + "\n"
    klines = parse_csv(text.encode(), "BTCUSDT", "5m", ingested_at=7, name="x.csv")
    assert [k.open_time for k in klines] == [1743465000000, 1743465300000]
    k = klines[1]
    assert (k.open, k.high, k.low, k.close, k.volume) == (
        "82525.10",
        "82562.00",
        "82480.90",
        "82517.50",
        "224.504",
    )
    assert (k.close_time, k.quote_volume, k.trades) == (1743465599999, "18526765.98370", 5026)
    assert (k.taker_buy_base, k.taker_buy_quote, k.source) == (
        "134.351",
        "11087473.79480",
        "archive",
    )


def test_csv_microsecond_timestamps_become_ms() -> None:
    row = ROW1.replace("1743465300000", "1743465300000000").replace(
        "1743465599999", "1743465599999999"
    )
    (k,) = parse_csv(row.encode(), "BTCUSDT", "5m", 1)
    assert (k.open_time, k.close_time) == (1743465300000, 1743465599999)


@pytest.mark.parametrize(
    ("bad", "where"),
    [
        ("1743465600000,82517.50,oops,82500.00,82590.00,1,1743465899999,1,2,1,1,0", "x.csv:2"),
        ("1743465600000,1,1,1,1,1,1743465899999,1,2.5,1,1,0", "x.csv:2"),
        ("1743465600000,1,2,3", "x.csv:2"),
        ("abc,1,1,1,1,1,1743465899999,1,2,1,1,0", "x.csv:2"),
    ],
)
def test_csv_errors_name_the_file_and_line(bad: str, where: str) -> None:
    with pytest.raises(ArchiveError) as info:
        parse_csv(f"{ROW1}\n{bad}\n".encode(), "BTCUSDT", "5m", 1, name="x.csv")
    assert info.value.path == where


def test_csv_rows_must_ascend() -> None:
    with pytest.raises(ArchiveError, match="ascending"):
        parse_csv(f"{ROW1}\n{ROW0}\n".encode(), "BTCUSDT", "5m", 1, name="x.csv")


def test_checksum_parse_and_verify() -> None:
    data = b"zip bytes"
    digest = hashlib.sha256(data).hexdigest()
    assert parse_checksum(f"{digest}  BTCUSDT-1m-2024-01.zip\n", "BTCUSDT-1m-2024-01.zip") == digest
    verify_checksum(data, digest, "f.zip")
    with pytest.raises(ArchiveError, match="does not match"):
        verify_checksum(data + b"!", digest, "f.zip")
    with pytest.raises(ArchiveError, match="names"):
        parse_checksum(f"{digest}  OTHER.zip\n", "BTCUSDT-1m-2024-01.zip")
    with pytest.raises(ArchiveError):
        parse_checksum("<Error>NoSuchKey</Error>", "BTCUSDT-1m-2024-01.zip")


def make_zip(member: str, text: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(member, text)
    return buf.getvalue()


FILE = ArchiveFile.daily("BTCUSDT", "5m", 1743465300000)


def test_read_zip_and_bad_zip() -> None:
    assert read_zip(make_zip(FILE.csv_name, ROW1), FILE) == ROW1.encode()
    with pytest.raises(ArchiveError, match="zip"):
        read_zip(b"PK\x03\x04 not really", FILE)


class FakeArchive:
    def __init__(self, zips: dict[str, bytes], corrupt: set[str] | None = None) -> None:
        self.zips = zips
        self.corrupt = corrupt or set()
        self.requests: list[str] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.lstrip("/")
        self.requests.append(path)
        base = path.removesuffix(".CHECKSUM")
        data = self.zips.get(base)
        if data is None:
            return httpx.Response(404, text="<Error><Code>NoSuchKey</Code></Error>")
        if path.endswith(".CHECKSUM"):
            name = base.rsplit("/", 1)[1]
            return httpx.Response(200, text=f"{hashlib.sha256(data).hexdigest()}  {name}\n")
        if base in self.corrupt:
            data = data[:-5] + b"XXXXX"
        return httpx.Response(200, content=data)


def client(fake: FakeArchive, cache: Path) -> ArchiveClient:
    return ArchiveClient(
        ArchiveConfig(endpoint="http://archive.test"),
        cache_dir=cache,
        transport=httpx.MockTransport(fake.handler),
    )


def run_fetch(c: ArchiveClient, file: ArchiveFile) -> object:
    async def go() -> object:
        async with c:
            return await c.fetch(file, ingested_at=1)

    return asyncio.run(go())


def test_fetch_verifies_caches_and_reuses(tmp_path: Path) -> None:
    fake = FakeArchive({FILE.path: make_zip(FILE.csv_name, f"{HEADER}\n{ROW0}\n{ROW1}\n")})
    c = client(fake, tmp_path)
    klines = run_fetch(c, FILE)
    assert isinstance(klines, list) and len(klines) == 2
    assert c.stats.downloaded == 1
    cached = c.cache_path(FILE)
    assert cached.exists() and cached.with_name(cached.name + ".CHECKSUM").exists()
    assert not list(cached.parent.glob("*.tmp"))  # no temp files left behind
    # second client: served from the cache after one look at the published checksum
    fake.requests.clear()
    c2 = client(fake, tmp_path)
    assert run_fetch(c2, FILE) == klines
    assert fake.requests == [FILE.path + ".CHECKSUM"] and c2.stats.cached == 1
    assert c2.stats.downloaded == 0 and c2.stats.corrections == 0


def test_a_reuploaded_file_is_downloaded_again_and_counted_as_a_correction(
    tmp_path: Path,
) -> None:
    fake = FakeArchive({FILE.path: make_zip(FILE.csv_name, f"{HEADER}\n{ROW0}\n{ROW1}\n")})
    first = run_fetch(client(fake, tmp_path), FILE)
    assert isinstance(first, list) and len(first) == 2
    old_sha = hashlib.sha256(fake.zips[FILE.path]).hexdigest()
    # the exchange replaces the file: one row gone (new content, new CHECKSUM)
    fake.zips[FILE.path] = make_zip(FILE.csv_name, f"{HEADER}\n{ROW1}\n")
    new_sha = hashlib.sha256(fake.zips[FILE.path]).hexdigest()
    fake.requests.clear()
    c = client(fake, tmp_path)
    # the stale copy is still readable for a diff, by its old checksum only
    assert len(c.cached_klines(FILE, 1, old_sha)) == 2
    assert c.cached_klines(FILE, 1, new_sha) == []
    second = run_fetch(c, FILE)
    assert isinstance(second, list) and [k.open_time for k in second] == [1743465300000]
    assert fake.requests == [FILE.path + ".CHECKSUM", FILE.path]
    assert (c.stats.corrections, c.stats.downloaded, c.stats.cached) == (1, 1, 0)
    assert c.used[FILE.path] == new_sha == c.cached_checksum(FILE)
    # and the cache now holds the new content: the next use downloads nothing
    fake.requests.clear()
    c3 = client(fake, tmp_path)
    assert run_fetch(c3, FILE) == second
    assert fake.requests == [FILE.path + ".CHECKSUM"] and c3.stats.corrections == 0


def test_the_cache_key_does_not_depend_on_host_port_or_mirror_prefix(tmp_path: Path) -> None:
    fake = FakeArchive({FILE.path: make_zip(FILE.csv_name, ROW1)})

    def handler(request: httpx.Request) -> httpx.Response:
        # a mirror serving the same tree below a prefix
        path = request.url.path.removeprefix("/mirror")
        return fake.handler(httpx.Request("GET", request.url.copy_with(path=path)))

    a = ArchiveClient(
        ArchiveConfig(endpoint="http://127.0.0.1:8001"),
        cache_dir=tmp_path,
        transport=httpx.MockTransport(fake.handler),
    )
    b = ArchiveClient(
        ArchiveConfig(endpoint="http://localhost:9002/mirror/"),
        cache_dir=tmp_path,
        transport=httpx.MockTransport(handler),
    )
    assert a.cache_path(FILE) == b.cache_path(FILE) == tmp_path / FILE.path
    run_fetch(a, FILE)
    run_fetch(b, FILE)
    assert (a.stats.downloaded, b.stats.downloaded, b.stats.cached) == (1, 0, 1)


def test_a_file_no_longer_published_is_not_served_from_the_cache(tmp_path: Path) -> None:
    fake = FakeArchive({FILE.path: make_zip(FILE.csv_name, ROW1)})
    run_fetch(client(fake, tmp_path), FILE)
    fake.zips.clear()
    c = client(fake, tmp_path)
    assert run_fetch(c, FILE) is None
    assert c.stats.missing == 1 and c.stats.cached == 0


def test_missing_file_is_none(tmp_path: Path) -> None:
    c = client(FakeArchive({}), tmp_path)
    assert run_fetch(c, FILE) is None
    assert c.stats.missing == 1


def test_corrupt_file_is_detected_and_not_cached(tmp_path: Path) -> None:
    fake = FakeArchive({FILE.path: make_zip(FILE.csv_name, ROW1)}, corrupt={FILE.path})
    c = client(fake, tmp_path)
    with pytest.raises(ArchiveError, match="sha256"):
        run_fetch(c, FILE)
    assert c.stats.corrupt == 2  # downloaded twice, both bad
    assert not c.cache_path(FILE).exists()


def test_corrupt_cache_is_downloaded_again(tmp_path: Path) -> None:
    fake = FakeArchive({FILE.path: make_zip(FILE.csv_name, ROW1)})
    c = client(fake, tmp_path)
    run_fetch(c, FILE)
    c.cache_path(FILE).write_bytes(b"garbage")
    c2 = client(fake, tmp_path)
    klines = run_fetch(c2, FILE)
    assert isinstance(klines, list) and len(klines) == 1
    assert c2.stats.downloaded == 1 and c2.stats.cached == 0


def test_rows_outside_the_file_period_are_rejected(tmp_path: Path) -> None:
    other = ArchiveFile.daily("BTCUSDT", "5m", 1743465300000 + 86_400_000)
    fake = FakeArchive({other.path: make_zip(other.csv_name, ROW1)})
    with pytest.raises(ArchiveError, match="outside"):
        run_fetch(client(fake, tmp_path), other)


def test_atomic_write_replaces(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    atomic_write(target, b"one")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]
