"""The backfiller's price-kline pass (``futures.mark_price`` / ``index_price`` /
``premium_index``): for every enabled kind and configured pair, publish every closed candle
from ``max(backfill.start_date, onboardDate)`` not published yet: whole archive months, then
whole archive days (intervals up to 1d; checksum verified, cached), then REST pages up to the
newest closed candle by the exchange's clock. Runs after each kline pass on the same
``BinanceRest`` (one weight budget; pages of 499, weight 2, as for klines) and producer.
Resume: a source offset per kind and pair on the offsets topic (service
``backfiller.<kind>``), committed only after Kafka acknowledged the records.

Candles the exchange does not have (maintenance) are simply absent: nothing is fabricated, and
``qryptify status`` counts them as gaps (no empty-range events for these kinds yet)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from confluent_kafka import Producer

from qryptify.avro import AvroCodec
from qryptify.binance.archive import ArchiveClient
from qryptify.binance.rest import BinanceRest, SymbolInfo
from qryptify.binance.weights import best_page_limit
from qryptify.config import Config
from qryptify.errors import ArchiveError, MalformedPayload
from qryptify.futures.price import (
    PriceArchiveFile,
    PriceKind,
    PriceKline,
    day_files,
    enabled_kinds,
    month_files,
    parse_archive,
)
from qryptify.futures.sources import closed_price_klines
from qryptify.futures.topic import publish_records
from qryptify.offsets import SourceOffsetStore
from qryptify.pairs import Pair, ceil_open, next_open

logger = logging.getLogger(__name__)


class PriceKlineBackfill:
    def __init__(
        self,
        cfg: Config,
        rest: BinanceRest,
        archive: ArchiveClient | None,
        producer: Producer,
        offsets: SourceOffsetStore,
        *,
        codec: AvroCodec | None = None,
    ) -> None:
        self.cfg = cfg
        self.rest = rest
        self.archive = archive
        self.producer = producer
        self.offsets = offsets
        self.codec = codec or AvroCodec()
        self.kinds = enabled_kinds(cfg)
        self.page_limit = best_page_limit(cfg.rest.klines_limit)
        self._positions: dict[PriceKind, dict[Pair, int]] | None = None
        self.published = 0
        self.archive_files = 0
        self.rest_pages = 0

    @staticmethod
    def service(kind: PriceKind) -> str:
        return f"backfiller.{kind}"

    async def run_pass(self, infos: Mapping[str, SymbolInfo]) -> None:
        if self._positions is None:
            self._positions = {
                kind: await asyncio.to_thread(self.offsets.load, self.service(kind))
                for kind in self.kinds
            }
        now = await self.rest.server_time()
        for kind in self.kinds:
            positions = self._positions[kind]
            for pair in self.cfg.pairs:
                info = infos.get(pair.symbol)
                start = max(self.cfg.backfill.start_ms, (info.onboard_date or 0) if info else 0)
                begin = ceil_open(pair.interval, start)
                last = positions.get(pair)
                if last is not None:
                    begin = max(begin, next_open(pair.interval, last))
                rows = await self._collect(kind, pair, begin, now)
                if not rows:
                    continue
                await asyncio.to_thread(
                    publish_records, self.producer, self.cfg.futures.topic, self.codec, rows
                )
                positions[pair] = rows[-1].open_time
                await asyncio.to_thread(self._commit, kind, pair, rows[-1].open_time)
                self.published += len(rows)
                logger.info("%s %s: %d candles published", kind, pair, len(rows))

    def _commit(self, kind: PriceKind, pair: Pair, last_open: int) -> None:
        self.offsets.commit(self.service(kind), pair, last_open)
        self.offsets.flush()

    async def _archive_rows(
        self, kind: PriceKind, file: PriceArchiveFile, now: int
    ) -> list[PriceKline] | None:
        """The file's candles; None when it is not published or not usable (logged)."""
        assert self.archive is not None  # noqa: S101 - only called with an archive
        try:
            csv = await self.archive._csv(file)
            return None if csv is None else parse_archive(kind, csv, file, now)
        except (ArchiveError, MalformedPayload) as exc:
            logger.warning("%s archive %s: %s; the next step instead", kind, file, exc)
            return None

    async def _collect(self, kind: PriceKind, pair: Pair, begin: int, now: int) -> list[PriceKline]:
        out: list[PriceKline] = []
        cursor = begin
        # Whole months while published, then whole days (intervals up to 1d), then REST: a
        # missing or corrupt file ends that step for this series.
        for files in (month_files, day_files):
            for file in files(kind, pair, cursor, now) if self.archive is not None else []:
                rows = await self._archive_rows(kind, file, now)
                if rows is None:
                    break
                self.archive_files += 1
                out += [k for k in rows if k.open_time >= cursor and k.close_time < now]
                cursor = max(cursor, file.end_ms)
        tail, pages = await closed_price_klines(self.rest, kind, pair, cursor, now, self.page_limit)
        self.rest_pages += pages
        return out + tail
