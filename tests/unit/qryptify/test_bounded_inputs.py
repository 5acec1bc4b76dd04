"""Bounded inputs: REST bodies, archive downloads, zip members and WebSocket frames have size
caps; an archive redirect never leaves the archive's host."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import zipfile
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from qryptify.binance.archive import MAX_CHECKSUM_BYTES, ArchiveClient, ArchiveFile, read_zip
from qryptify.binance.rest import MAX_BODY_BYTES, BinanceRest
from qryptify.binance.ws import MAX_FRAME_BYTES, connect_options
from qryptify.config import ArchiveConfig, RestConfig
from qryptify.errors import ArchiveError, MalformedPayload

FILE = ArchiveFile.daily("BTCUSDT", "5m", 1743465300000)


def rest_answering(body: bytes, headers: dict[str, str] | None = None) -> BinanceRest:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers=headers or {})

    return BinanceRest(
        RestConfig(endpoint="http://exchange.test", retry_attempts=1),
        transport=httpx.MockTransport(handler),
    )


def server_time(rest: BinanceRest) -> object:
    async def go() -> object:
        async with rest:
            return await rest.server_time()

    return asyncio.run(go())


def test_a_rest_body_over_the_cap_is_refused_not_read() -> None:
    body = b'{"serverTime": 1, "pad": "' + b"x" * (MAX_BODY_BYTES + 10) + b'"}'
    with pytest.raises(MalformedPayload, match="exceeds|larger than"):
        server_time(rest_answering(body))


def test_a_compressed_rest_bomb_is_cut_off_by_its_decoded_size() -> None:
    bomb = gzip.compress(b" " * (MAX_BODY_BYTES + 1024), compresslevel=9)
    assert len(bomb) < MAX_BODY_BYTES // 100
    with pytest.raises(MalformedPayload, match="larger than"):
        server_time(rest_answering(bomb, {"Content-Encoding": "gzip"}))


def test_a_rest_body_under_the_cap_still_parses() -> None:
    assert server_time(rest_answering(b'{"serverTime": 1700000000000}')) == 1700000000000


def test_a_zip_member_inflating_past_the_limit_is_refused() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(FILE.csv_name, b"0" * 50_000)
    data = buf.getvalue()
    assert len(data) < 1_000
    with pytest.raises(ArchiveError, match="more than 10000"):
        read_zip(data, FILE, limit=10_000)
    assert len(read_zip(data, FILE, limit=50_000)) == 50_000


def archive(handler: object, cache: Path) -> ArchiveClient:
    return ArchiveClient(
        ArchiveConfig(endpoint="http://archive.test"),
        cache_dir=cache,
        transport=httpx.MockTransport(handler),  # type: ignore[arg-type]
    )


def fetch(c: ArchiveClient) -> object:
    async def go() -> object:
        async with c:
            return await c.fetch(FILE, ingested_at=1)

    return asyncio.run(go())


def test_an_oversized_checksum_download_is_refused(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"0" * (MAX_CHECKSUM_BYTES + 1))

    with pytest.raises(ArchiveError, match="download refused"):
        fetch(archive(handler, tmp_path))


def test_an_archive_redirect_to_another_host_is_refused(tmp_path: Path) -> None:
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr(FILE.csv_name, "")
    data = zipped.getvalue()
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.host != "archive.test":
            if request.url.path.endswith(".CHECKSUM"):
                return httpx.Response(200, text=f"{hashlib.sha256(data).hexdigest()}  x\n")
            return httpx.Response(200, content=data)
        return httpx.Response(302, headers={"Location": f"http://elsewhere.test{request.url.path}"})

    with pytest.raises(ArchiveError, match="another host"):
        fetch(archive(handler, tmp_path))
    assert all("elsewhere.test" not in url for url in seen)


def test_a_same_host_archive_redirect_is_followed(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/moved/"):
            return httpx.Response(404)
        return httpx.Response(302, headers={"Location": f"/moved{request.url.path}"})

    assert fetch(archive(handler, tmp_path)) is None  # followed to a 404: not published


def test_a_websocket_frame_over_the_cap_closes_the_connection() -> None:
    async def go() -> tuple[str, int | None]:
        async def handler(conn: ServerConnection) -> None:
            await conn.send("x" * 100)
            await conn.send("y" * (MAX_FRAME_BYTES + 1))
            await conn.wait_closed()

        async with serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            async with connect(f"ws://127.0.0.1:{port}", **connect_options(None)) as ws:
                first = await ws.recv()
                try:
                    await ws.recv()
                except ConnectionClosed as exc:
                    closed = exc.sent or exc.rcvd
                    return str(first), closed.code if closed else None
                raise AssertionError("the oversized frame was delivered")

    first, code = asyncio.run(go())
    assert first == "x" * 100
    assert code == 1009  # message too big
