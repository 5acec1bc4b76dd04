"""The producer's live futures path (``futures`` config): ``<symbol>@markPrice@1s`` on the
routed combined path for the funding schedule, REST for what settled or closed.

- One WebSocket (``ws.endpoint`` routed to ``/market/stream``) with every configured symbol's
  mark-price stream when funding is on. A frame whose next funding time moved on means a
  funding settled: it is fetched by REST at once. Reconnects with the producer's backoff; a
  connection silent for ``ws.stale_after_s`` is replaced; ahead of the 24 h cut it is rotated
  like the kline connections (``rotation.RotationPolicy``: replacement first, the old one closed
  once the replacement delivered). Malformed frames go to the DLQ.
- After every (re)connect (and at start) every series is filled by REST from its position.
- A watchdog (``ws.watchdog_grace_ms``, ``ws.watchdog_retry_ms``, on the exchange clock)
  fetches each price-kline series once its next candle closed (there is no kline stream of
  these kinds on USDⓈ-M) and any funding whose time passed without a frame.
- Everything goes through the producer's ``BinanceRest`` (one weight budget) and producer;
  positions are committed as source offsets (services ``producer.<kind>`` and
  ``producer.funding``) after Kafka acknowledged the records. Positions start from the newest
  of the producer's and the backfiller's offsets; a series with none starts at the current
  time (history is the backfiller's).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterable
from typing import cast

from confluent_kafka import Producer
from prometheus_client import Counter
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from qryptify.avro import AvroCodec
from qryptify.binance.rest import BinanceRest
from qryptify.binance.weights import best_page_limit
from qryptify.binance.ws import connect_options, plan_connections
from qryptify.config import Config
from qryptify.dlq import DlqWriter, FrameLetter
from qryptify.errors import ExchangeError, MalformedPayload
from qryptify.futures.live import CandleWatch, FundingWatch, mark_stream_url, parse_mark_frame
from qryptify.futures.price import PriceEmptyRange, PriceKind, PriceKline, enabled_kinds
from qryptify.futures.records import FuturesRecord
from qryptify.futures.sources import FundingSource, closed_price_klines
from qryptify.futures.topic import FundingOffsets, publish_records
from qryptify.offsets import SourceOffsetStore
from qryptify.pairs import Pair, last_closed_open, next_open
from qryptify.retry import backoff
from services.producer.rotation import Handover, RotationPolicy

logger = logging.getLogger(__name__)

Series = tuple[str, str, str]  # (kind, symbol, interval)
TICK_S = 0.05

# Beside the kline path's qryptify_producer_* metrics, in the same registry and endpoint.
FRAMES = Counter(
    "qryptify_producer_futures_frames_total", "markPrice frames received (malformed included)"
)
MALFORMED = Counter(
    "qryptify_producer_futures_malformed_frames_total", "Malformed markPrice frames (to the DLQ)"
)
PUBLISHED = Counter(
    "qryptify_producer_futures_published_total",
    "Settled fundings and closed price klines sent to Kafka",
    ["kind"],
)
REST_FILLS = Counter(
    "qryptify_producer_futures_rest_fetches_total",
    "REST fetches of a futures series, by what started them (stream, watchdog, gap_fill)",
    ["reason"],
)
ROTATIONS = Counter(
    "qryptify_producer_futures_rotations_total", "markPrice connections replaced before the cut"
)
EMPTY_RANGES = Counter(
    "qryptify_producer_futures_empty_ranges_total",
    "Price-kline ranges REST confirmed empty, sent to Kafka",
    ["kind"],
)
REST_ERRORS = Counter(
    "qryptify_producer_futures_rest_errors_total", "Failed futures REST fetches (retried later)"
)


def _stream_named(raw: str | bytes) -> str | None:
    """The ``stream`` a combined-stream frame names (the DLQ key, as for kline frames), if any."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    stream = body.get("stream") if isinstance(body, dict) else None
    return stream if isinstance(stream, str) else None


class FuturesLive:
    def __init__(
        self,
        cfg: Config,
        rest: BinanceRest,
        producer: Producer,
        offsets: SourceOffsetStore,
        *,
        codec: AvroCodec | None = None,
    ) -> None:
        self.cfg = cfg
        self.rest = rest
        self.producer = producer
        self.dlq = DlqWriter(producer, cfg.kafka.dlq_topic)
        self.offsets = offsets
        self.funding_offsets = FundingOffsets(cfg.kafka, producer)
        self.codec = codec or AvroCodec()
        self.kinds = enabled_kinds(cfg)
        self.symbols = list(dict.fromkeys(p.symbol for p in cfg.pairs))
        self.funding = FundingWatch()
        self.candles = CandleWatch()
        self.source = FundingSource(rest, None, page_limit=cfg.futures.funding_page_limit)
        self.page_limit = best_page_limit(cfg.rest.klines_limit)
        self._busy: set[object] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        ws = cfg.ws
        self.rotation = RotationPolicy(
            rotate_after_ms=int(ws.rotate_after_s * 1000),
            stagger_ms=int(ws.rotate_stagger_s * 1000),
            handover_timeout_s=ws.handover_timeout_s,
        )
        # Staggered after the kline connections (opened at the same time) so that it does not
        # rotate together with any of them.
        self.rotation_index = len(plan_connections(cfg.pairs, ws.max_streams_per_connection))
        self.connects = 0
        self.rotations = 0
        self.abandoned_rotations = 0
        self.published = 0
        self.malformed = 0

    # -- entry point ---------------------------------------------------------------------------
    async def run(self) -> None:
        await self._load_positions()
        loops = [asyncio.create_task(self._watchdog_loop(), name="futures-watchdog")]
        if self.cfg.futures.funding_rates:
            loops.append(asyncio.create_task(self._stream_loop(), name="futures-stream"))
        else:
            self._fill_all()
        try:
            await asyncio.gather(*loops)
        finally:
            for task in [*loops, *self._tasks]:
                task.cancel()
            await asyncio.gather(*loops, *self._tasks, return_exceptions=True)

    async def _load_positions(self) -> None:
        now = self.rest.clock.now_ms()
        if self.cfg.futures.funding_rates:
            own = await asyncio.to_thread(self.funding_offsets.load, "producer.funding")
            theirs = await asyncio.to_thread(self.funding_offsets.load, "backfiller.funding")
            for symbol in self.symbols:
                known = [t for t in (own.get(symbol), theirs.get(symbol)) if t is not None]
                self.funding.published[symbol] = max(known) if known else now
        for kind in self.kinds:
            mine = await asyncio.to_thread(self.offsets.load, f"producer.{kind}")
            backfilled = await asyncio.to_thread(self.offsets.load, f"backfiller.{kind}")
            for pair in self.cfg.pairs:
                known = [t for t in (mine.get(pair), backfilled.get(pair)) if t is not None]
                start = max(known) if known else last_closed_open(pair.interval, now)
                self.candles.published[(kind, pair.symbol, pair.interval)] = start
        logger.info(
            "futures live: %d symbols (funding %s), kinds %s",
            len(self.symbols),
            "on" if self.cfg.futures.funding_rates else "off",
            ", ".join(self.kinds) or "none",
        )

    # -- the markPrice stream ------------------------------------------------------------------
    async def _stream_loop(self) -> None:
        ws_cfg = self.cfg.ws
        delays = backoff(ws_cfg.reconnect_initial_s, ws_cfg.reconnect_max_s, jitter=0.5)
        while True:
            ws = await self._open()
            if ws is None:
                await asyncio.sleep(next(delays))
                continue
            self.connects += 1
            if self.connects > 1:
                logger.warning("futures: markPrice stream reconnected (%d)", self.connects - 1)
            self._fill_all()  # whatever settled or closed while we were away
            try:
                await self._serve(ws)
            except (ConnectionClosed, TimeoutError, OSError) as exc:
                logger.warning("futures: markPrice stream lost (%s); reconnecting", exc)
            delays = backoff(ws_cfg.reconnect_initial_s, ws_cfg.reconnect_max_s, jitter=0.5)
            await asyncio.sleep(next(delays))

    async def _open(self) -> ClientConnection | None:
        url = mark_stream_url(self.cfg.ws.endpoint, self.symbols)
        try:
            return await connect(url, **connect_options(self.cfg.ws.ping_interval_s or None))
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            logger.warning("futures: markPrice connect failed: %s", exc)
            return None

    async def _serve(self, ws: ClientConnection) -> None:
        """Read ``ws`` until it is lost (raises); replace it ahead of the 24 h cut, opening the
        replacement first and closing the old one once the replacement delivered a frame."""
        opened = self.rest.clock.now_ms()
        retry_at = 0
        while True:
            new: ClientConnection | None = None
            try:
                await self._read(ws, self.rotation.deadline(opened, self.rotation_index))
                if self.rest.clock.now_ms() < retry_at:
                    await self._read(ws, retry_at)
                logger.info("futures: rotating the markPrice connection before the 24 h cut")
                new = await self._open()
                if new is None or not await self._handover(ws, new):
                    if new is not None:
                        await self._close(new)
                    self.abandoned_rotations += 1
                    retry_at = self.rest.clock.now_ms() + self.rotation.retry_after_ms
                    continue
            except BaseException:
                for conn in (ws, new):
                    if conn is not None:
                        await self._close(conn)
                raise
            await self._close(ws)
            ws, opened = new, self.rest.clock.now_ms()
            self.rotations += 1
            ROTATIONS.inc()
            logger.info("futures: markPrice connection rotated (%d)", self.rotations)

    async def _read(self, ws: ClientConnection, until_ms: int) -> None:
        """Handle frames until the exchange clock reaches ``until_ms``; TimeoutError when the
        connection is silent for ``ws.stale_after_s``, ConnectionClosed when it is gone."""
        last = time.monotonic()
        while self.rest.clock.now_ms() < until_ms:
            try:
                # Cancelling recv() loses nothing (websockets guarantees it).
                raw = await asyncio.wait_for(ws.recv(), TICK_S)
            except TimeoutError:
                if time.monotonic() - last >= self.cfg.ws.stale_after_s:
                    raise TimeoutError("markPrice stream silent") from None
                continue
            last = time.monotonic()
            self._on_frame(raw)

    async def _handover(self, old: ClientConnection, new: ClientConnection) -> bool:
        """Both connections open: keep reading ``old`` until ``new`` delivered (True) or did
        not in time (False). If ``old`` dies meanwhile, ``new`` takes over at once (True)."""
        first = asyncio.ensure_future(new.recv())
        started = time.monotonic()
        try:
            while True:
                if first.done() and first.exception() is not None:
                    return False
                decision = self.rotation.handover(first.done(), time.monotonic() - started)
                if decision is Handover.CLOSE_OLD:
                    self._on_frame(first.result())
                    return True
                if decision is Handover.ABANDON:
                    return False
                try:
                    raw = await asyncio.wait_for(old.recv(), TICK_S)
                except TimeoutError:
                    continue
                except (ConnectionClosed, OSError):
                    self._fill_all()  # frames may have been missed on neither
                    return True
                self._on_frame(raw)
        finally:
            if not first.done():
                first.cancel()
                await asyncio.gather(first, return_exceptions=True)

    async def _close(self, ws: ClientConnection) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), timeout=2)

    def _on_frame(self, raw: str | bytes) -> None:
        FRAMES.inc()
        try:
            update = parse_mark_frame(raw)
        except MalformedPayload as exc:
            self._malformed(raw, exc.reason)
            return
        if self.funding.on_update(update):
            self._spawn(("funding", update.symbol), "stream")

    def _malformed(self, raw: str | bytes, reason: str) -> None:
        # Nothing stored comes from these frames, but a bad one is kept as the kline path keeps
        # its own: raw on the DLQ, counted, logged once (a flood of them would flood the log).
        self.malformed += 1
        MALFORMED.inc()
        if self.malformed == 1:
            logger.warning(
                "futures: malformed markPrice frame: %s (further ones are counted and sent to %s)",
                reason,
                self.cfg.kafka.dlq_topic,
            )
        raw_bytes = raw.encode() if isinstance(raw, str) else bytes(raw)
        self.dlq.post(FrameLetter(raw_bytes, "markPrice", reason, _stream_named(raw)))

    # -- watchdog and fetches ------------------------------------------------------------------
    async def _watchdog_loop(self) -> None:
        ws_cfg = self.cfg.ws
        while True:
            now = self.rest.clock.now_ms()
            for symbol in self.funding.due(now, ws_cfg.watchdog_grace_ms):
                self._spawn(("funding", symbol), "watchdog")
            for series in self.candles.due(now, ws_cfg.watchdog_grace_ms):
                self._spawn(series, "watchdog")
            await asyncio.sleep(0.2)

    def _fill_all(self) -> None:
        if self.cfg.futures.funding_rates:
            for symbol in self.symbols:
                self._spawn(("funding", symbol), "gap_fill")
        for series in list(self.candles.published):
            self._spawn(series, "gap_fill")

    def _spawn(self, job: tuple[str, ...], reason: str) -> None:
        if job in self._busy:
            return
        self._busy.add(job)
        REST_FILLS.labels(reason).inc()
        task = asyncio.create_task(self._run_job(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_job(self, job: tuple[str, ...]) -> None:
        retry = self.cfg.ws.watchdog_retry_ms
        try:
            if job[0] == "funding":
                newest = await self._fetch_funding(job[1])
                self.funding.fetched(job[1], newest, self.rest.clock.now_ms(), retry)
            else:
                series = (job[0], job[1], job[2])
                newest = await self._fetch_candles(series)
                self.candles.fetched(series, newest, self.rest.clock.now_ms(), retry)
        except (ExchangeError, MalformedPayload) as exc:
            REST_ERRORS.inc()
            logger.warning("futures: fetching %s failed (retried later): %s", "/".join(job), exc)
        finally:
            self._busy.discard(job)

    async def _fetch_funding(self, symbol: str) -> int | None:
        now = self.rest.clock.now_ms()
        start = self.funding.published.get(symbol, now) + 1
        rows = await self.source.between(symbol, start, now)
        if not rows:
            return None
        await self._publish(rows)
        await asyncio.to_thread(self._commit_funding, symbol, rows[-1].funding_time)
        return rows[-1].funding_time

    async def _fetch_candles(self, series: Series) -> int | None:
        kind, symbol, interval = series
        pk = cast(PriceKind, kind)
        pair = Pair(symbol, interval)
        # Closed by the exchange clock with the watchdog's grace as a margin: our estimate of
        # that clock may run a little ahead, and the candle containing the exchange's now is
        # still open (REST returns it with partial values).
        now = self.rest.clock.now_ms() - self.cfg.ws.watchdog_grace_ms
        start = next_open(interval, self.candles.published[series])
        found = await closed_price_klines(self.rest, pk, pair, start, now, self.page_limit)
        position = found.position()  # past confirmed-empty slots too (a maintenance window)
        if position is None:
            return None
        await self._publish(found.records())
        for e in found.empty:
            logger.warning(
                "futures: %s %s: exchange has no candles in [%d, %d): recorded as empty range",
                kind,
                pair,
                e.range.start_time,
                e.range.end_time,
            )
        await asyncio.to_thread(self._commit, pk, pair, position)
        return position

    def _commit_funding(self, symbol: str, funding_time: int) -> None:
        self.funding_offsets.commit("producer.funding", symbol, funding_time)
        self.funding_offsets.flush()

    def _commit(self, kind: PriceKind, pair: Pair, last_open: int) -> None:
        self.offsets.commit(f"producer.{kind}", pair, last_open)
        self.offsets.flush()

    async def _publish(self, rows: Iterable[FuturesRecord]) -> None:
        batch = list(rows)
        await asyncio.to_thread(
            publish_records, self.producer, self.cfg.futures.topic, self.codec, batch
        )
        self.published += len(batch)
        for row in batch:
            if isinstance(row, PriceEmptyRange):
                EMPTY_RANGES.labels(row.kind).inc()
            else:
                PUBLISHED.labels(row.kind if isinstance(row, PriceKline) else "funding").inc()
