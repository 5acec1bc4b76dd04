"""The backfiller's funding-rate pass (``futures.funding_rates``): for every configured symbol,
publish every settled funding from ``max(backfill.start_date, onboardDate)`` that the futures
topic does not hold yet: whole archive months first (checksum verified), then REST pages up to
the exchange's now. Runs after each kline pass, on the same ``BinanceRest`` (one weight
budget) and the same producer. Resume: a funding source offset per symbol on the offsets topic
(service ``backfiller.funding``), committed only after Kafka acknowledged the records."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from confluent_kafka import Producer

from qryptify.avro import AvroCodec
from qryptify.binance.archive import month_start, next_month
from qryptify.binance.rest import SymbolInfo
from qryptify.config import Config
from qryptify.errors import ArchiveError, MalformedPayload
from qryptify.futures.funding import FundingRate
from qryptify.futures.sources import FundingSource
from qryptify.futures.topic import FundingOffsets, publish_records

logger = logging.getLogger(__name__)

SERVICE = "backfiller.funding"


class FundingBackfill:
    def __init__(
        self,
        cfg: Config,
        source: FundingSource,
        producer: Producer,
        offsets: FundingOffsets,
        *,
        codec: AvroCodec | None = None,
    ) -> None:
        self.cfg = cfg
        self.source = source
        self.producer = producer
        self.offsets = offsets
        self.codec = codec or AvroCodec()
        self._resume: dict[str, int] | None = None
        self.symbols = list(dict.fromkeys(p.symbol for p in cfg.pairs))
        self.published = 0
        self.archive_months = 0

    async def run_pass(self, infos: Mapping[str, SymbolInfo]) -> None:
        """One pass over every symbol (``published`` counts what went out)."""
        if self._resume is None:
            self._resume = await asyncio.to_thread(self.offsets.load, SERVICE)
            logger.info("funding: resuming %d symbols from source offsets", len(self._resume))
        now = await self.source.rest.server_time()
        published = 0
        for symbol in self.symbols:
            info = infos.get(symbol)
            begin = max(self.cfg.backfill.start_ms, (info.onboard_date or 0) if info else 0)
            last = self._resume.get(symbol)
            if last is not None:
                begin = max(begin, last + 1)
            rows = await self._collect(symbol, begin, now)
            if not rows:
                continue
            await asyncio.to_thread(
                publish_records, self.producer, self.cfg.futures.topic, self.codec, rows
            )
            self._resume[symbol] = rows[-1].funding_time
            await asyncio.to_thread(self._commit, symbol, rows[-1].funding_time)
            published += len(rows)
            logger.info("funding %s: %d published (through %d)", symbol, len(rows), last or 0)
        self.published += published

    def _commit(self, symbol: str, funding_time: int) -> None:
        self.offsets.commit(SERVICE, symbol, funding_time)
        self.offsets.flush()

    async def _collect(self, symbol: str, begin: int, now: int) -> list[FundingRate]:
        out: list[FundingRate] = []
        cursor = begin
        month = month_start(cursor)
        # Whole months from the archive while they are published; the rest from REST.
        while self.source.archive is not None and next_month(month) <= now:
            try:
                rows = await self.source.month(symbol, month, now)
            except (ArchiveError, MalformedPayload) as exc:
                logger.warning("funding archive %s: %s; REST instead", symbol, exc)
                rows = None
            if rows is None:
                break
            self.archive_months += 1
            out += [f for f in rows if f.funding_time >= cursor]
            month = next_month(month)
            cursor = max(cursor, month)
        return out + await self.source.between(symbol, cursor, now)
