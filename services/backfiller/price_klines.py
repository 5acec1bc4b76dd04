"""The backfiller's price-kline pass (``futures.mark_price`` / ``index_price`` /
``premium_index``): for every enabled kind and configured pair, publish every closed candle
from ``max(backfill.start_date, onboardDate)`` not published yet: whole archive months, then
whole archive days (intervals up to 1d; checksum verified, cached), then REST pages up to the
newest closed candle by the exchange's clock. Runs after each kline pass on the same
``BinanceRest`` (one weight budget; pages of 499, weight 2, as for klines) and producer.
Resume: a source offset per kind and pair on the offsets topic (service
``backfiller.<kind>``), committed only after Kafka acknowledged the records.

Candles the exchange does not have (maintenance) are never fabricated: as for the trade klines,
the slots an archive file lacks are asked from REST, and the slots REST pages confirm empty
(asked twice, ``planning.confirmed_page_events``) are published as ``PriceEmptyRange`` records
in time order with the candles; ``qryptify status`` does not count them as gaps."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime

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
from qryptify.futures.sources import PriceFetch, closed_price_klines
from qryptify.futures.topic import publish_records
from qryptify.gaps import missing_runs
from qryptify.kline import closed_at
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
        self.empty_ranges = 0

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
                found = await self._collect(kind, pair, begin, now)
                if info is not None and not info.trading and info.settles_at is None:
                    # Not trading, no settlement: no empty range after its last candle.
                    newest = max((k.open_time for k in found.klines), default=begin)
                    found.empty = [e for e in found.empty if e.range.end_time <= newest]
                position = found.position()
                if position is None:
                    continue
                await asyncio.to_thread(
                    publish_records,
                    self.producer,
                    self.cfg.futures.topic,
                    self.codec,
                    found.records(),
                )
                positions[pair] = position
                await asyncio.to_thread(self._commit, kind, pair, position)
                self.published += len(found.klines)
                self.empty_ranges += len(found.empty)
                logger.info("%s %s: %d candles published", kind, pair, len(found.klines))
                for e in found.empty:
                    logger.warning(
                        "%s %s: exchange has no candles in [%s, %s): recorded as empty range",
                        kind,
                        pair,
                        datetime.fromtimestamp(e.range.start_time / 1000, UTC).isoformat(),
                        datetime.fromtimestamp(e.range.end_time / 1000, UTC).isoformat(),
                    )

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

    async def _collect(self, kind: PriceKind, pair: Pair, begin: int, now: int) -> PriceFetch:
        found = PriceFetch()
        cursor = begin
        # Whole months while published, then whole days (intervals up to 1d), then REST: a
        # missing or corrupt file ends that step for this series.
        for files in (month_files, day_files):
            for file in files(kind, pair, cursor, now) if self.archive is not None else []:
                rows = await self._archive_rows(kind, file, now)
                if rows is None:
                    break
                self.archive_files += 1
                kept = [k for k in rows if k.open_time >= cursor and closed_at(k.close_time, now)]
                found.klines += kept
                # Slots the file lacks are asked from REST, as for the trade klines' files.
                opens = [k.open_time for k in kept]
                for a, b in missing_runs(
                    pair.interval, max(cursor, file.start_ms), file.end_ms, opens
                ):
                    self._add(found, await self._rest(kind, pair, a, now, b))
                cursor = max(cursor, file.end_ms)
        self._add(found, await self._rest(kind, pair, cursor, now))
        found.klines.sort(key=lambda k: k.open_time)
        return found

    async def _rest(
        self, kind: PriceKind, pair: Pair, start: int, now: int, end: int | None = None
    ) -> PriceFetch:
        return await closed_price_klines(self.rest, kind, pair, start, now, self.page_limit, end)

    def _add(self, found: PriceFetch, part: PriceFetch) -> None:
        found.klines += part.klines
        found.empty += part.empty
        self.rest_pages += part.pages
