"""One test per fault flag, each showing the fault's effect from a client's point of view."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, ConnectionClosedError

from qryptify.pairs import DAY_MS, HOUR_MS, MINUTE_MS, align_open
from sim.archive import archive_url_path
from sim.faults import MALFORMED_KINDS, Faults
from sim.server import SimulatorThread
from tests.integration.sim.helpers import (
    START_MS,
    WAIT_S,
    Params,
    closes,
    collect,
    klines_of,
)
from tests.integration.sim.test_sim_archive import as_rest, read_zip

KLINES: Params = {"symbol": "BTCUSDT", "interval": "1m", "limit": 10}
JAN_2024 = 1_704_067_200_000


def set_faults(http: httpx.Client, **patch: Any) -> dict[str, Any]:
    r = http.post("/sim/faults", json=patch)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_every_fault_flag_has_a_test_here() -> None:
    source = Path(__file__).read_text()
    untested = [
        f.name for f in dataclasses.fields(Faults) if f.name not in source.replace("test_every", "")
    ]
    assert untested == []


# -- REST ---------------------------------------------------------------------------------------


def test_rest_429_next_and_rest_retry_after_s(http: httpx.Client) -> None:
    set_faults(http, rest_429_next=2, rest_retry_after_s=7)
    first, second, third = (http.get("/fapi/v1/klines", params=KLINES) for _ in range(3))
    for r in (first, second):
        assert r.status_code == 429
        assert r.headers["Retry-After"] == "7" and r.json()["code"] == -1003
        assert "X-MBX-USED-WEIGHT-1M" in r.headers
    assert third.status_code == 200 and len(third.json()) == 10
    assert http.get("/sim/faults").json()["rest_429_next"] == 0


def test_rest_429_rate(http: httpx.Client) -> None:
    set_faults(http, rest_429_rate=1.0)
    assert {http.get("/fapi/v1/time").status_code for _ in range(5)} == {429}
    set_faults(http, rest_429_rate=0.0)
    assert http.get("/fapi/v1/time").status_code == 200


def test_rest_5xx_next_is_a_burst(http: httpx.Client) -> None:
    set_faults(http, rest_5xx_next=3)
    statuses = [http.get("/fapi/v1/klines", params=KLINES).status_code for _ in range(4)]
    assert statuses == [503, 500, 502, 200]
    assert http.get("/sim/stats").json()["responses_5xx"] == 3


def test_rest_5xx_rate(http: httpx.Client) -> None:
    set_faults(http, rest_5xx_rate=1.0)
    responses = [http.get("/fapi/v1/time") for _ in range(3)]
    assert all(500 <= r.status_code < 600 for r in responses)
    json_bodies = [
        r.json() for r in responses if r.headers["content-type"].startswith("application/json")
    ]
    assert all(body["code"] in (-1000, -1001) for body in json_bodies)


def test_slow_ms_makes_an_impatient_client_time_out(
    sim: SimulatorThread, http: httpx.Client
) -> None:
    set_faults(http, slow_ms=3000)
    with httpx.Client(base_url=sim.url, timeout=0.3) as impatient, pytest.raises(httpx.ReadTimeout):
        impatient.get("/fapi/v1/time")
    with pytest.raises(httpx.ReadTimeout):
        impatient_archive = httpx.Client(base_url=sim.url, timeout=0.3)
        try:
            impatient_archive.get(archive_url_path("monthly", "BTCUSDT", "1d", JAN_2024))
        finally:
            impatient_archive.close()
    set_faults(http, slow_ms=0)
    assert http.get("/fapi/v1/time").status_code == 200


# -- WebSocket ----------------------------------------------------------------------------------


def test_ws_drop_every_s_drops_without_a_close_frame(
    sim: SimulatorThread, http: httpx.Client
) -> None:
    set_faults(http, ws_drop_every_s=0.5)

    async def scenario() -> ConnectionClosed:
        async with websockets.connect(f"{sim.ws_url}/market/stream?streams=btcusdt@kline_1m") as ws:
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), WAIT_S)
            except ConnectionClosed as exc:
                return exc
        raise AssertionError("unreachable")

    exc = asyncio.run(scenario())
    assert isinstance(exc, ConnectionClosedError) and exc.rcvd is None  # no close frame
    assert http.get("/sim/stats").json()["ws_drops"] >= 1


def test_ws_stall_keeps_the_socket_open_but_silent(
    sim: SimulatorThread, http: httpx.Client
) -> None:
    async def scenario() -> tuple[int, int]:
        async with websockets.connect(
            f"{sim.ws_url}/market/stream?streams=btcusdt@kline_1m", ping_interval=None
        ) as ws:
            await asyncio.wait_for(ws.recv(), WAIT_S)  # healthy first
            await asyncio.to_thread(set_faults, http, ws_stall=True)
            # Drain frames that were in flight, then expect silence and no pong.
            silent_after = 0
            with pytest.raises(TimeoutError):
                while True:
                    await asyncio.wait_for(ws.recv(), 1.5)
                    silent_after += 1
            pong = await ws.ping()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(pong, 1.0)
            assert ws.state.name == "OPEN"
            await asyncio.to_thread(set_faults, http, ws_stall=False)
            await asyncio.wait_for(ws.recv(), WAIT_S)  # data flows again
            return silent_after, 1

    drained, resumed = asyncio.run(scenario())
    assert drained <= 8 and resumed == 1


def test_ws_skip_close_rate_loses_every_close(sim: SimulatorThread, http: httpx.Client) -> None:
    set_faults(http, ws_skip_close_rate=1.0)
    url = f"{sim.ws_url}/market/stream?streams=btcusdt@kline_1m"
    frames = asyncio.run(collect(url, lambda fs: len({k["t"] for k in klines_of(fs)}) >= 3))
    assert closes(frames) == []
    assert len({k["t"] for k in klines_of(frames)}) >= 3  # candles moved on regardless


def test_ws_duplicate_close_rate_repeats_every_close(
    sim: SimulatorThread, http: httpx.Client
) -> None:
    set_faults(http, ws_duplicate_close_rate=1.0)
    url = f"{sim.ws_url}/market/stream?streams=btcusdt@kline_1m"
    frames = asyncio.run(collect(url, lambda fs: len(closes(fs)) >= 4))
    done = closes(frames)
    times = [k["t"] for k in done]
    assert all(times.count(t) == 2 for t in set(times[:2]))
    assert done[0] == done[1]


@pytest.mark.parametrize("kind", MALFORMED_KINDS)
def test_ws_malformed_rate_and_kinds(sim: SimulatorThread, http: httpx.Client, kind: str) -> None:
    set_faults(http, ws_malformed_rate=1.0, ws_malformed_kinds=[kind])
    url = f"{sim.ws_url}/market/stream?streams=btcusdt@kline_1m"
    texts = asyncio.run(collect(url, lambda fs: len(fs) >= 3, raw=True))
    for text in texts:
        if kind == "bad_json":
            with pytest.raises(json.JSONDecodeError):
                json.loads(text)
            continue
        k = json.loads(text)["data"]["k"]
        if kind == "missing_field":
            assert "c" not in k
        elif kind == "wrong_type":
            assert isinstance(k["t"], str) and isinstance(k["o"], float)
        else:
            assert float(k["h"]) < float(k["l"])
    assert http.get("/sim/stats").json()["ws_malformed_sent"] >= 3


# -- Data ---------------------------------------------------------------------------------------


def test_empty_ranges_remove_candles_from_rest_truth_archive_and_ws(
    sim: SimulatorThread, http: httpx.Client
) -> None:
    gap_start = JAN_2024 + 2 * HOUR_MS
    now = http.get("/fapi/v1/time").json()["serverTime"]
    live_start = align_open("1m", now) + 2 * MINUTE_MS
    set_faults(
        http,
        empty_ranges=[
            {"symbol": "BTCUSDT", "start": gap_start, "end": gap_start + HOUR_MS},
            {"symbol": "BTCUSDT", "start": live_start, "end": live_start + 2 * MINUTE_MS},
        ],
    )
    rest = http.get(
        "/fapi/v1/klines",
        params={"symbol": "BTCUSDT", "interval": "1h", "startTime": JAN_2024, "limit": 4},
    ).json()
    assert [r[0] for r in rest] == [
        JAN_2024,
        JAN_2024 + HOUR_MS,
        JAN_2024 + 3 * HOUR_MS,
        JAN_2024 + 4 * HOUR_MS,
    ]
    ones = http.get(
        "/sim/truth",
        params={
            "symbol": "BTCUSDT",
            "interval": "1m",
            "start": gap_start - MINUTE_MS,
            "end": gap_start + HOUR_MS + MINUTE_MS,
        },
    ).json()
    assert [r[0] for r in ones] == [gap_start - MINUTE_MS, gap_start + HOUR_MS]
    archive = http.get(archive_url_path("daily", "BTCUSDT", "1h", JAN_2024))
    with zipfile.ZipFile(io.BytesIO(archive.content)) as zf:
        lines = zf.read("BTCUSDT-1h-2024-01-01.csv").decode().splitlines()
    assert len(lines) == 1 + 23 and not any(line.startswith(f"{gap_start},") for line in lines)
    assert http.get("/sim/availability", params={"symbol": "BTCUSDT"}).json()["empty_ranges"][
        0
    ] == [gap_start, gap_start + HOUR_MS]
    # Live: no frame of any kind for the two missing minutes; the stream resumes after them.
    url = f"{sim.ws_url}/market/stream?streams=btcusdt@kline_1m"
    frames = asyncio.run(
        collect(
            url,
            lambda fs: any(k["t"] >= live_start + 2 * MINUTE_MS and k["x"] for k in klines_of(fs)),
        )
    )
    seen = {k["t"] for k in klines_of(frames)}
    assert live_start not in seen and live_start + MINUTE_MS not in seen
    assert live_start + 2 * MINUTE_MS in seen


def test_corrected_candle_ws_differs_from_rest(sim: SimulatorThread, http: httpx.Client) -> None:
    now = http.get("/fapi/v1/time").json()["serverTime"]
    target = align_open("1m", now) + MINUTE_MS
    set_faults(http, corrected=[{"symbol": "BTCUSDT", "interval": "1m", "open_time": target}])
    url = f"{sim.ws_url}/market/stream?streams=btcusdt@kline_1m"
    frames = asyncio.run(collect(url, lambda fs: any(k["t"] == target for k in closes(fs))))
    ws_close = next(k for k in closes(frames) if k["t"] == target)
    rest = http.get(
        "/fapi/v1/klines",
        params={"symbol": "BTCUSDT", "interval": "1m", "startTime": target, "limit": 1},
    ).json()[0]
    truth = http.get(
        "/sim/truth",
        params={"symbol": "BTCUSDT", "interval": "1m", "start": target, "end": target + 1},
    ).json()[0]
    assert rest == truth
    assert (ws_close["c"], ws_close["v"]) != (rest[4], rest[5])
    # Other candles agree.
    for k in closes(frames):
        if k["t"] != target:
            other = http.get(
                "/sim/truth",
                params={"symbol": "BTCUSDT", "interval": "1m", "start": k["t"], "end": k["t"] + 1},
            ).json()[0]
            assert (k["c"], k["v"]) == (other[4], other[5])


def test_corrected_rate(sim: SimulatorThread, http: httpx.Client) -> None:
    set_faults(http, corrected_rate=1.0)
    url = f"{sim.ws_url}/market/stream?streams=ethusdt@kline_1m"
    frames = asyncio.run(collect(url, lambda fs: len(closes(fs)) >= 1))
    k = closes(frames)[0]
    truth = http.get(
        "/sim/truth",
        params={"symbol": "ETHUSDT", "interval": "1m", "start": k["t"], "end": k["t"] + 1},
    ).json()[0]
    assert k["v"] != truth[5]


# -- Archive ------------------------------------------------------------------------------------


def test_archive_missing(http: httpx.Client) -> None:
    path = archive_url_path("monthly", "BTCUSDT", "1d", JAN_2024)
    set_faults(http, archive_missing=["BTCUSDT-1d-2024-01.zip"])
    assert http.get(path).status_code == 404
    assert http.get(path + ".CHECKSUM").status_code == 404
    assert (
        http.get(
            archive_url_path("monthly", "BTCUSDT", "1d", JAN_2024 + 31 * 86_400_000)
        ).status_code
        == 200
    )


def test_archive_missing_rate(http: httpx.Client) -> None:
    set_faults(http, archive_missing_rate=1.0)
    assert http.get(archive_url_path("monthly", "ETHUSDT", "1d", JAN_2024)).status_code == 404


def _checksum_matches(http: httpx.Client, path: str) -> tuple[bool, bool]:
    body = http.get(path).content
    expected = http.get(path + ".CHECKSUM").text.split()[0]
    try:
        with zipfile.ZipFile(io.BytesIO(body)) as zf:
            zip_ok = zf.testzip() is None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError):
        zip_ok = False
    except Exception:  # noqa: BLE001 - zlib errors surface as various types
        zip_ok = False
    return hashlib.sha256(body).hexdigest() == expected, zip_ok


def test_archive_corrupt(http: httpx.Client) -> None:
    path = archive_url_path("monthly", "BTCUSDT", "1h", JAN_2024)
    assert _checksum_matches(http, path) == (True, True)
    set_faults(http, archive_corrupt=["BTCUSDT-1h-2024-01.zip"])
    checksum_ok, _ = _checksum_matches(http, path)
    assert not checksum_ok


def test_archive_corrupt_rate(http: httpx.Client) -> None:
    set_faults(http, archive_corrupt_rate=1.0)
    checksum_ok, _ = _checksum_matches(http, archive_url_path("monthly", "ETHUSDT", "1h", JAN_2024))
    assert not checksum_ok


def test_seed_changes_which_files_a_rate_picks(http: httpx.Client) -> None:
    names = [f"BTCUSDT-1m-2023-{m:02d}-{d:02d}.zip" for m in range(1, 13) for d in range(1, 28)]
    a = Faults(seed=1, archive_missing_rate=0.5)
    b = Faults(seed=2, archive_missing_rate=0.5)
    assert [a.is_archive_missing(n) for n in names] != [b.is_archive_missing(n) for n in names]
    assert set_faults(http, seed=2)["seed"] == 2


def test_faults_from_the_constructor() -> None:
    with (
        SimulatorThread(speed=60, start_ms=START_MS, faults={"rest_5xx_next": 1}) as sim,
        httpx.Client(base_url=sim.url) as http,
    ):
        assert http.get("/fapi/v1/time").status_code == 503
        assert http.get("/fapi/v1/time").status_code == 200


def test_archive_reuploads_change_the_file_the_file_its_checksum_rest_and_truth_at_its_time(
    sim: SimulatorThread, http: httpx.Client
) -> None:
    path = archive_url_path("monthly", "BTCUSDT", "1h", JAN_2024)
    gone = (JAN_2024 + 2 * DAY_MS, JAN_2024 + 2 * DAY_MS + 3 * HOUR_MS)  # 3 whole hours
    half = (JAN_2024 + 5 * DAY_MS + 30 * 60_000, JAN_2024 + 5 * DAY_MS + HOUR_MS)  # half an hour
    maintenance = (JAN_2024 + 9 * DAY_MS, JAN_2024 + 9 * DAY_MS + 2 * HOUR_MS)
    at = sim.now_ms() + DAY_MS
    sim.set_faults(
        empty_ranges=[{"symbol": "BTCUSDT", "start": maintenance[0], "end": maintenance[1]}],
        archive_reuploads=[
            {"file": "BTCUSDT-1h-2024-01.zip", "at": at, "empty": [list(gone), list(half)],
             "filled": [list(maintenance)]}
        ],
    )  # fmt: skip
    params: dict[str, str | int] = {
        "symbol": "BTCUSDT",
        "interval": "1h",
        "start": JAN_2024,
        "end": JAN_2024 + 31 * DAY_MS,
    }

    def snapshot() -> tuple[str, dict[int, list[object]], dict[int, list[object]]]:
        checksum = http.get(path + ".CHECKSUM").text
        _names, lines = read_zip(http.get(path).content)
        rows = {int(str(r[0])): r for r in (as_rest(line) for line in lines[1:])}
        truth = {int(r[0]): r for r in http.get("/sim/truth", params=params).json()}
        return checksum, rows, truth

    before_sum, before_rows, before_truth = snapshot()
    assert before_rows == before_truth and len(before_rows) == 31 * 24 - 2
    sim.advance(DAY_MS)  # the re-upload's time has come
    after_sum, after_rows, after_truth = snapshot()
    assert after_sum != before_sum
    assert after_rows == after_truth and len(after_rows) == 31 * 24 - 3
    hour = JAN_2024 + 5 * DAY_MS
    assert before_rows[hour] != after_rows[hour]  # a half-empty hour: different values
    assert all(t not in after_rows for t in range(gone[0], gone[1], HOUR_MS))
    assert all(t in after_rows for t in range(maintenance[0], maintenance[1], HOUR_MS))
    rest = http.get("/fapi/v1/klines", params={
        "symbol": "BTCUSDT", "interval": "1h", "startTime": gone[0], "endTime": gone[1], "limit": 10
    }).json()  # fmt: skip
    assert [r[0] for r in rest] == [gone[1]]  # REST agrees: the three hours are gone
    counts = httpx.get(sim.url + "/sim/archive-requests").json()
    assert counts[path.lstrip("/") + ".CHECKSUM"] == 2 and sim.stats()["klines_requests"] == 1
