"""WebSocket contract: routed paths, frame formats, closes, control messages, connection rules."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import aiohttp
import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from qryptify.pairs import close_time
from sim.server import SimulatorThread
from tests.integration.sim.helpers import (
    START_MS,
    WAIT_S,
    check_kline_event,
    closes,
    collect,
    klines_of,
    row_of,
)


def test_combined_stream_frames_and_exactly_one_close_per_candle(
    sim: SimulatorThread, http: httpx.Client
) -> None:
    url = f"{sim.ws_url}/market/stream?streams=btcusdt@kline_1m/ethusdt@kline_1m"
    frames = asyncio.run(collect(url, lambda fs: len(closes(fs)) >= 6))
    streams = set()
    for frame in frames:
        assert list(frame) == ["stream", "data"]
        check_kline_event(frame["data"])
        k = frame["data"]["k"]
        assert frame["stream"] == f"{k['s'].lower()}@kline_{k['i']}"
        assert k["L"] - k["f"] + 1 == k["n"]
        assert frame["data"]["E"] >= k["t"]
        streams.add(frame["stream"])
    assert streams == {"btcusdt@kline_1m", "ethusdt@kline_1m"}
    done = closes(frames)
    for k in done:
        # x:true is sent 0.2–2 s (sim) after the close: E is checked against T, not wall time.
        event = next(f["data"] for f in frames if f["data"]["k"] is k)
        assert 200 <= event["E"] - k["T"] <= 2000 + 60_000  # sender granularity at speed 60
    keys = [(k["s"], k["t"]) for k in done]
    assert len(keys) == len(set(keys)), "one x:true per candle"
    # Every closed candle equals REST/truth.
    for k in done:
        truth = http.get(
            "/sim/truth",
            params={"symbol": k["s"], "interval": "1m", "start": k["t"], "end": k["t"] + 1},
        ).json()
        assert truth == [[*row_of(k), "0"]]
    # Updates while the candle forms, then its close.
    first = done[0]
    updates = [
        k for k in klines_of(frames) if k["s"] == first["s"] and k["t"] == first["t"] and not k["x"]
    ]
    assert updates, "x:false updates before the close"
    assert all(u["n"] <= first["n"] for u in updates)


def test_close_frame_timing_is_in_sim_time(sim: SimulatorThread) -> None:
    url = f"{sim.ws_url}/market/stream?streams=btcusdt@kline_1m"
    frames = asyncio.run(collect(url, lambda fs: len(closes(fs)) >= 2))
    for frame in frames:
        data = frame["data"]
        if data["k"]["x"]:
            assert data["E"] - data["k"]["T"] >= 200


def test_raw_path_sends_bare_payloads(sim: SimulatorThread) -> None:
    url = f"{sim.ws_url}/market/ws/bnbusdt@kline_1m"
    frames = asyncio.run(collect(url, lambda fs: len(fs) >= 3))
    for event in frames:
        check_kline_event(event)
        assert event["s"] == "BNBUSDT" and event["k"]["i"] == "1m"


def test_legacy_paths_connect_but_send_nothing(sim: SimulatorThread) -> None:
    async def scenario() -> tuple[list[str], list[str], int]:
        got_legacy: list[str] = []
        async with (
            websockets.connect(f"{sim.ws_url}/stream?streams=btcusdt@kline_1m") as legacy,
            websockets.connect(f"{sim.ws_url}/ws/ethusdt@kline_1m") as legacy_raw,
        ):
            routed = await collect(
                f"{sim.ws_url}/market/stream?streams=btcusdt@kline_1m",
                lambda fs: len(closes(fs)) >= 1,
                raw=False,
            )
            for ws in (legacy, legacy_raw):
                with contextlib.suppress(TimeoutError):
                    got_legacy.append(str(await asyncio.wait_for(ws.recv(), 0.5)))
            # They still answer control messages.
            await legacy.send('{"method":"LIST_SUBSCRIPTIONS","id":7}')
            reply = json.loads(await asyncio.wait_for(legacy.recv(), WAIT_S))
            assert reply == {"result": ["btcusdt@kline_1m"], "id": 7}
        return got_legacy, [json.dumps(f) for f in routed], len(closes(routed))

    legacy, routed, routed_closes = asyncio.run(scenario())
    assert legacy == [] and routed and routed_closes >= 1


def test_subscribe_unsubscribe_list(sim: SimulatorThread) -> None:
    async def scenario() -> None:
        async with websockets.connect(f"{sim.ws_url}/market/stream") as ws:
            await ws.send(
                json.dumps({"method": "SUBSCRIBE", "params": ["solusdt@kline_1m"], "id": 1})
            )
            frames: list[Any] = []
            while True:
                msg = json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))
                if "id" in msg:
                    assert msg == {"result": None, "id": 1}
                    continue
                frames.append(msg)
                if len(frames) >= 2:
                    break
            assert {f["stream"] for f in frames} == {"solusdt@kline_1m"}
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}))
            await ws.send(
                json.dumps({"method": "UNSUBSCRIBE", "params": ["solusdt@kline_1m"], "id": 3})
            )
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 4}))
            replies: dict[int, Any] = {}
            while len(replies) < 3:
                msg = json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))
                if "id" in msg:
                    replies[msg["id"]] = msg
            assert replies[2] == {"result": ["solusdt@kline_1m"], "id": 2}
            assert replies[3] == {"result": None, "id": 3}
            assert replies[4] == {"result": [], "id": 4}

    asyncio.run(scenario())


def test_more_than_200_streams_is_refused(sim: SimulatorThread) -> None:
    names = "/".join(f"s{i}usdt@kline_1m" for i in range(201))

    async def scenario() -> int | None:
        async with websockets.connect(f"{sim.ws_url}/market/stream?streams={names}") as ws:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), WAIT_S)
            return ws.close_code

    assert asyncio.run(scenario()) == 1008


def test_subscribing_past_200_streams_disconnects(sim: SimulatorThread) -> None:
    async def scenario() -> int | None:
        async with websockets.connect(f"{sim.ws_url}/market/ws") as ws:
            names = [f"s{i}usdt@kline_1m" for i in range(150)]
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": names, "id": 1}))
            assert json.loads(await asyncio.wait_for(ws.recv(), WAIT_S)) == {
                "result": None,
                "id": 1,
            }
            more = [f"t{i}usdt@kline_1m" for i in range(51)]
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": more, "id": 2}))
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), WAIT_S)
            return ws.close_code

    assert asyncio.run(scenario()) == 1008


def test_too_many_incoming_messages_disconnects(sim: SimulatorThread) -> None:
    async def scenario() -> int | None:
        async with websockets.connect(f"{sim.ws_url}/market/ws") as ws:
            for i in range(25):
                await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), WAIT_S)
            return ws.close_code

    assert asyncio.run(scenario()) == 1008


def test_server_sends_ping_frames() -> None:
    async def scenario(url: str) -> int:
        pings = 0
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(url, autoping=False) as ws,
        ):
            while pings < 2:
                msg = await asyncio.wait_for(ws.receive(), WAIT_S)
                if msg.type == aiohttp.WSMsgType.PING:
                    pings += 1
                    await ws.pong(msg.data)
        return pings

    with SimulatorThread(speed=60, start_ms=START_MS, ping_interval_s=0.2) as sim:
        assert asyncio.run(scenario(f"{sim.ws_url}/market/ws")) == 2
        assert sim.stats()["ws_pings_sent"] >= 2


def test_connection_is_cut_after_24_hours_of_sim_time(
    sim: SimulatorThread, http: httpx.Client
) -> None:
    async def scenario() -> int | None:
        async with websockets.connect(f"{sim.ws_url}/market/stream?streams=btcusdt@kline_1m") as ws:
            await asyncio.wait_for(ws.recv(), WAIT_S)
            r = await asyncio.to_thread(
                http.post, "/sim/clock", json={"advance_ms": 24 * 3_600_000}
            )
            assert r.status_code == 200
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), WAIT_S)
            return ws.close_code

    assert asyncio.run(scenario()) == 1001


def test_higher_interval_close_and_delisted_stream(
    sim: SimulatorThread, http: httpx.Client
) -> None:
    # Jump to 2 s before an hour closes, then watch the 1h candle close.
    now = http.get("/fapi/v1/time").json()["serverTime"]
    hour_close = close_time("1h", now - now % 3_600_000)
    http.post("/sim/clock", json={"set_ms": hour_close - 2_000})
    url = f"{sim.ws_url}/market/stream?streams=xrpusdt@kline_1h/delistusdt@kline_1m"
    frames = asyncio.run(collect(url, lambda fs: any(k["i"] == "1h" for k in closes(fs))))
    assert all(f["stream"] == "xrpusdt@kline_1h" for f in frames), (
        "a settled symbol streams nothing"
    )
    k = closes(frames)[0]
    rest = http.get(
        "/fapi/v1/klines",
        params={"symbol": "XRPUSDT", "interval": "1h", "startTime": k["t"], "limit": 1},
    ).json()
    assert rest[0][:11] == row_of(k)


def test_every_candle_closes_exactly_once_in_order_at_speed_3600() -> None:
    with SimulatorThread(speed=3600, start_ms=START_MS) as sim:
        url = f"{sim.ws_url}/market/stream?streams=btcusdt@kline_1m/ethusdt@kline_5m"
        frames = asyncio.run(collect(url, lambda fs: len(closes(fs)) >= 120))
    by_symbol: dict[str, list[int]] = {}
    for k in closes(frames):
        by_symbol.setdefault(k["s"], []).append(k["t"])
    btc = by_symbol["BTCUSDT"]
    assert btc == list(range(btc[0], btc[0] + 60_000 * len(btc), 60_000))
    eth = by_symbol["ETHUSDT"]
    assert len(eth) >= 10
    assert eth == list(range(eth[0], eth[0] + 300_000 * len(eth), 300_000))
