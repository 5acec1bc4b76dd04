"""Fetching planned units: an archive file (its holes and a missing or corrupt file filled from
REST) or a REST page (an empty answer asked twice), each into a ``UnitResult``. Units of a pair
are fetched a few ahead and handed over in plan order (``ordered_map``)."""

from __future__ import annotations

import asyncio
import itertools
import logging
from bisect import bisect_left
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from prometheus_client import Counter

from qryptify.archive_ledger import IngestedFile
from qryptify.avro import EncodedKlines, KlineCodec
from qryptify.binance.archive import ArchiveClient
from qryptify.binance.rest import BinanceRest
from qryptify.errors import ArchiveError
from qryptify.gaps import day_shortfalls, missing_runs
from qryptify.kline import closed_at
from qryptify.pairs import Pair, count_opens
from qryptify.planning import (
    ArchiveUnit,
    Page,
    RestUnit,
    Unit,
    confirmed_answer,
    fallback_units,
    ranges_to_units,
)
from services.backfiller.units import UnitResult, valid_rows, with_missing

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

ARCHIVE_FILES = Counter("qryptify_backfill_archive_files_total", "Archive files", ["outcome"])


async def ordered_map(
    items: Sequence[T], fetch: Callable[[T], Awaitable[R]], window: int
) -> AsyncIterator[R]:
    """``fetch`` every item with at most ``window`` running, yielding results in item order."""
    it = iter(items)
    running: deque[asyncio.Task[R]] = deque(
        asyncio.ensure_future(fetch(item)) for item in itertools.islice(it, max(1, window))
    )
    try:
        while running:
            result = await running.popleft()
            for item in itertools.islice(it, 1):
                running.append(asyncio.ensure_future(fetch(item)))
            yield result
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


class UnitFetcher:
    """Fetches units through the process's one ``BinanceRest`` (one weight budget) and its
    archive client (two files at a time); ``prefetch`` units of a pair run ahead."""

    def __init__(
        self,
        rest: BinanceRest,
        archive: ArchiveClient | None,
        codec: KlineCodec,
        *,
        limit: int,
        prefetch: int = 4,
    ) -> None:
        self.rest = rest
        self.archive = archive
        self.codec = codec
        self.limit = limit
        self.prefetch = prefetch
        self._archive_sem = asyncio.Semaphore(2)

    def results(self, pair: Pair, units: Sequence[Unit], now: int) -> AsyncIterator[UnitResult]:
        """Each unit's result, in the order of ``units``."""
        return ordered_map(units, lambda u: self.fetch(pair, u, now), self.prefetch)

    async def fetch(self, pair: Pair, unit: Unit, now: int) -> UnitResult:
        if isinstance(unit, RestUnit):
            return await self.fetch_rest(pair, unit, now)
        return await self._fetch_archive(pair, unit, now)

    async def fetch_rest(self, pair: Pair, unit: RestUnit, now: int) -> UnitResult:
        page = unit.page
        closed, empty = await confirmed_answer(
            pair,
            page,
            lambda: self._page(pair, page, now),
            lambda rows: rows.open_times,
            with_missing,
            now,
            self.limit,
        )
        # Invalid candles are not published, but their slots are not empty either.
        return UnitResult(rest=[valid_rows(closed, self.codec, "rest", pair)], empty=empty)

    async def _page(self, pair: Pair, page: Page, now: int) -> EncodedKlines:
        """The page's candles closed by ``now``, as topic values from the raw answer."""
        return await self.rest.klines_values(
            pair, page.start_ms, page.last_ms, self.limit, codec=self.codec, exchange_now_ms=now
        )

    async def _fetch_archive(self, pair: Pair, unit: ArchiveUnit, now: int) -> UnitResult:
        assert self.archive is not None  # noqa: S101 - archive units are planned only with it
        rows: EncodedKlines | None
        async with self._archive_sem:
            reuploads = self.archive.stats.corrections
            try:
                rows = await self.archive.fetch_encoded(unit.file, now, self.codec)
            except ArchiveError as exc:
                logger.warning("archive %s unusable (%s): filling from REST", unit.file, exc)
                ARCHIVE_FILES.labels("corrupt").inc()
                rows = None
                corrupt = True
            else:
                corrupt = False
            if self.archive.stats.corrections > reuploads:  # the cached copy was stale
                ARCHIVE_FILES.labels("reuploaded").inc()
        if rows is None:
            if not corrupt:
                logger.info("archive %s not published: filling from daily files / REST", unit.file)
                ARCHIVE_FILES.labels("missing").inc()
            replacement = fallback_units(pair, unit, now, limit=self.limit)
            merged = UnitResult()
            async for part in self.results(pair, replacement, now):
                merged.extend(part)
            return merged
        ARCHIVE_FILES.labels("used").inc()
        sha = self.archive.used.get(unit.file.path)
        # Rows in [unit.start_ms, unit.end_ms) that closed before `now`; open times ascend.
        opens = rows.open_times
        rows = rows.take(bisect_left(opens, unit.start_ms), bisect_left(opens, unit.end_ms))
        if rows.close_times and not closed_at(max(rows.close_times), now):
            rows = rows.pick([i for i, t in enumerate(rows.close_times) if closed_at(t, now)])
        rows = valid_rows(rows, self.codec, "archive", unit.file)
        result = UnitResult(archive=[rows])
        if sha is not None:
            result.files.append(IngestedFile(unit.file, unit.start_ms, unit.end_ms, sha))
        opens = rows.open_times
        for day, expected, found in day_shortfalls(
            pair.interval, unit.start_ms, unit.end_ms, opens
        ):
            logger.info(
                "archive %s: %s has %d rows, %d expected",
                unit.file,
                datetime.fromtimestamp(day / 1000, tz=UTC).date().isoformat(),
                found,
                expected,
            )
        holes = missing_runs(pair.interval, unit.start_ms, unit.end_ms, opens)
        if holes:
            missing = sum(count_opens(pair.interval, a, b) for a, b in holes)
            logger.info(
                "archive %s: %d of %d expected candles missing in %d ranges; asking REST",
                unit.file,
                missing,
                count_opens(pair.interval, unit.start_ms, unit.end_ms),
                len(holes),
            )
            async for part in self.results(
                pair, ranges_to_units(pair.interval, holes, self.limit), now
            ):
                result.extend(part)  # REST fills, merged by open time when published
        return result
