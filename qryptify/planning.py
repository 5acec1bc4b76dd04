"""Pure planning for the backfiller: which candles a pair needs, which archive files and which
REST pages fetch them. Plain data in, plain data out; "now" is the exchange's time, passed in.

* ``pair_range``: open times ``[start, end)`` of every closed candle a pair should have —
  from ``max(start_date, onboardDate)`` to the exchange's now (or the contract's settlement).
* ``plan_pages``: REST pages by open time, each covering exactly ``limit`` grid slots with an
  inclusive ``endTime``, so pages can be fetched in parallel and a short page proves that the
  exchange has no candle for the slots it left out.
* ``plan_units``: the range as an ordered list of archive files (monthly where the month is
  complete and published, daily after) and REST pages for the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from qryptify.binance.archive import DAILY_INTERVALS, ArchiveFile
from qryptify.gaps import missing_runs
from qryptify.kline import EmptyRange, Kline, closed_klines
from qryptify.pairs import (
    DAY_MS,
    HOUR_MS,
    Pair,
    align_open,
    ceil_open,
    count_opens,
    interval_ms,
    is_fixed,
    month_start,
    next_month,
    next_open,
    open_times,
)

logger = logging.getLogger(__name__)

A = TypeVar("A")

#: When archive files appear after their period ends (data.binance.vision: dailies at about
#: 08:30-08:40 UTC the next day, monthlies early in the following month).
DAILY_DELAY_MS = 10 * HOUR_MS
MONTHLY_DELAY_MS = 2 * DAY_MS


@dataclass(frozen=True, slots=True)
class PairRange:
    """Open times ``[start_ms, end_ms)``: every candle in it is closed at planning time."""

    pair: Pair
    start_ms: int
    end_ms: int

    @property
    def expected(self) -> int:
        return count_opens(self.pair.interval, self.start_ms, self.end_ms)

    @property
    def empty(self) -> bool:
        return self.end_ms <= self.start_ms


def pair_range(
    pair: Pair,
    start_date_ms: int,
    exchange_now_ms: int,
    onboard_ms: int | None = None,
    settles_at_ms: int | None = None,
) -> PairRange:
    """Every candle that opens at/after ``start_date_ms`` (or in the candle holding the
    listing moment, if later) and is closed by the exchange's clock."""
    interval = pair.interval
    start = ceil_open(interval, start_date_ms)
    if onboard_ms is not None:
        start = max(start, align_open(interval, onboard_ms))
    # Candles opening before the one that holds "now" are closed (close_time < now).
    end = align_open(interval, exchange_now_ms)
    if settles_at_ms is not None:
        # The last candle is the one holding the settlement's last millisecond.
        end = min(end, next_open(interval, align_open(interval, settles_at_ms - 1)))
    return PairRange(pair, start, max(start, end))


@dataclass(frozen=True, slots=True)
class Page:
    """One ``/fapi/v1/klines`` request: ``startTime=start_ms``, ``endTime=last_ms``."""

    start_ms: int
    last_ms: int  # inclusive: the open time of the page's last grid slot
    slots: int  # grid slots in [start_ms, last_ms]

    @property
    def end_ms(self) -> int:
        """Exclusive bound: any open time >= this is not part of the page."""
        return self.last_ms + 1


def plan_pages(interval: str, start_ms: int, end_ms: int, limit: int) -> list[Page]:
    """Pages of at most ``limit`` grid slots covering open times ``[start_ms, end_ms)``."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if is_fixed(interval):
        step = interval_ms(interval)
        first = ceil_open(interval, start_ms)
        total = count_opens(interval, start_ms, end_ms)
        pages: list[Page] = []
        for offset in range(0, total, limit):
            slots = min(limit, total - offset)
            page_start = first + offset * step
            pages.append(Page(page_start, page_start + (slots - 1) * step, slots))
        return pages
    opens = list(open_times(interval, start_ms, end_ms))
    return [
        Page(chunk[0], chunk[-1], len(chunk))
        for chunk in (opens[i : i + limit] for i in range(0, len(opens), limit))
    ]


@dataclass(frozen=True, slots=True)
class ArchiveUnit:
    """Take the candles opening in ``[start_ms, end_ms)`` from ``file``."""

    file: ArchiveFile
    start_ms: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class RestUnit:
    page: Page

    @property
    def start_ms(self) -> int:
        return self.page.start_ms

    @property
    def end_ms(self) -> int:
        return self.page.end_ms


Unit = ArchiveUnit | RestUnit


def file_published(file: ArchiveFile, exchange_now_ms: int, delay_ms: int) -> bool:
    """Expected to be published: its period ended ``delay_ms`` ago and its candles closed."""
    last_close = next_open(file.interval, align_open(file.interval, file.end_ms - 1))
    return max(file.end_ms, last_close) + delay_ms <= exchange_now_ms


def plan_archive(
    pair: Pair,
    start_ms: int,
    end_ms: int,
    exchange_now_ms: int,
    *,
    min_candles: int,
    daily_delay_ms: int = DAILY_DELAY_MS,
    monthly_delay_ms: int = MONTHLY_DELAY_MS,
    monthly: bool = True,
) -> list[tuple[int, int, ArchiveFile | None]]:
    """Split ``[start_ms, end_ms)`` into ``(start, end, file)`` spans in order; ``file`` is
    None where REST fetches the span. Monthly files where the month is complete, published
    and worth it (at least ``min_candles`` needed from it), daily files likewise, REST else.
    Adjacent REST spans are merged.
    """
    interval = pair.interval
    spans: list[tuple[int, int, ArchiveFile | None]] = []

    def add(a: int, b: int, file: ArchiveFile | None) -> None:
        if b <= a:
            return
        if file is None and spans and spans[-1][2] is None and spans[-1][1] == a:
            spans[-1] = (spans[-1][0], b, None)
        else:
            spans.append((a, b, file))

    cursor = start_ms
    while cursor < end_ms:
        month_end = min(end_ms, next_month(month_start(cursor)))
        if monthly:
            file = ArchiveFile.monthly(pair.symbol, interval, cursor)
            if (
                file_published(file, exchange_now_ms, monthly_delay_ms)
                and count_opens(interval, cursor, month_end) >= min_candles
            ):
                add(cursor, month_end, file)
                cursor = month_end
                continue
        if interval not in DAILY_INTERVALS:
            add(cursor, month_end, None)
            cursor = month_end
            continue
        day_end = min(end_ms, cursor - cursor % DAY_MS + DAY_MS)
        file = ArchiveFile.daily(pair.symbol, interval, cursor)
        if (
            file_published(file, exchange_now_ms, daily_delay_ms)
            and count_opens(interval, cursor, day_end) >= min_candles
        ):
            add(cursor, day_end, file)
        else:
            add(cursor, day_end, None)
        cursor = day_end
    return spans


def plan_units(
    pair: Pair,
    start_ms: int,
    end_ms: int,
    exchange_now_ms: int,
    *,
    limit: int,
    archive: bool,
    min_archive_candles: int | None = None,
    daily_delay_ms: int = DAILY_DELAY_MS,
    monthly_delay_ms: int = MONTHLY_DELAY_MS,
) -> list[Unit]:
    """The ordered work for open times ``[start_ms, end_ms)``: archive files and REST pages."""
    if not archive:
        return [RestUnit(p) for p in plan_pages(pair.interval, start_ms, end_ms, limit)]
    spans = plan_archive(
        pair,
        start_ms,
        end_ms,
        exchange_now_ms,
        min_candles=archive_min_candles(limit, min_archive_candles),
        daily_delay_ms=daily_delay_ms,
        monthly_delay_ms=monthly_delay_ms,
    )
    return units_from_spans(pair, spans, limit)


def archive_min_candles(limit: int, min_archive_candles: int | None) -> int:
    """Fewest candles an archive file must cover to replace REST pages (default: half a page)."""
    return max(1, limit // 2 if min_archive_candles is None else min_archive_candles)


def units_from_spans(
    pair: Pair, spans: Sequence[tuple[int, int, ArchiveFile | None]], limit: int
) -> list[Unit]:
    """Archive spans as work: a file where one covers the span, REST pages where none does."""
    units: list[Unit] = []
    for a, b, file in spans:
        if file is None:
            units.extend(RestUnit(p) for p in plan_pages(pair.interval, a, b, limit))
        else:
            units.append(ArchiveUnit(file, a, b))
    return units


def fallback_units(
    pair: Pair,
    unit: ArchiveUnit,
    exchange_now_ms: int,
    *,
    limit: int,
    min_archive_candles: int | None = None,
    daily_delay_ms: int = DAILY_DELAY_MS,
) -> list[Unit]:
    """What replaces an archive file that is missing or corrupt: a monthly file's range in
    daily files (where they exist) and REST; a daily file's range by REST."""
    if unit.file.kind == "monthly" and pair.interval in DAILY_INTERVALS:
        spans = plan_archive(
            pair,
            unit.start_ms,
            unit.end_ms,
            exchange_now_ms,
            min_candles=archive_min_candles(limit, min_archive_candles),
            daily_delay_ms=daily_delay_ms,
            monthly=False,
        )
        return units_from_spans(pair, spans, limit)
    return [RestUnit(p) for p in plan_pages(pair.interval, unit.start_ms, unit.end_ms, limit)]


def page_events(
    pair: Pair, page: Page, klines: Sequence[Kline], exchange_now_ms: int, limit: int
) -> tuple[list[Kline], list[EmptyRange]]:
    """One REST answer for ``page``: its closed candles, and the ranges the exchange thereby
    confirms empty (only when the answer could hold every slot of the page)."""
    closed = closed_klines(klines, exchange_now_ms)
    return closed, confirmed_empty(
        pair, page, [k.open_time for k in closed], exchange_now_ms, limit
    )


def confirmed_empty(
    pair: Pair, page: Page, open_times: Iterable[int], exchange_now_ms: int, limit: int
) -> list[EmptyRange]:
    """The ranges an answer for ``page`` holding closed candles at ``open_times`` confirms
    empty: none unless the answer could hold every slot of the page."""
    if page.slots > limit:
        return []
    return [
        EmptyRange(pair.symbol, pair.interval, a, b, exchange_now_ms)
        for a, b in missing_runs(pair.interval, page.start_ms, page.end_ms, open_times)
    ]


async def confirmed_answer(
    pair: Pair,
    page: Page,
    ask: Callable[[], Awaitable[A]],
    open_times: Callable[[A], Sequence[int]],
    with_missing: Callable[[A, A], A],
    exchange_now_ms: int,
    limit: int,
) -> tuple[A, list[EmptyRange]]:
    """One REST page's closed candles (``ask`` fetches them, in any form ``open_times``
    reads: Klines or topic values) and the empty ranges confirmed.

    One answer without candles is not the exchange's confirmation yet (a replica behind, a
    truncated page): the page is asked again; only slots absent from both answers are
    recorded empty, and candles only the second answer had are kept (``with_missing(first,
    second)``: the first plus the second's candles it lacks, ascending)."""
    answer = await ask()
    empty = confirmed_empty(pair, page, open_times(answer), exchange_now_ms, limit)
    if empty:
        before = len(open_times(answer))
        answer = with_missing(answer, await ask())
        extra = len(open_times(answer)) - before
        if extra:
            logger.warning("%s: a second answer held %d candles the first lacked", pair, extra)
            empty = confirmed_empty(pair, page, open_times(answer), exchange_now_ms, limit)
    return answer, empty


async def confirmed_page_events(
    pair: Pair,
    page: Page,
    ask: Callable[[], Awaitable[Sequence[Kline]]],
    exchange_now_ms: int,
    limit: int,
) -> tuple[list[Kline], list[EmptyRange]]:
    """``page_events`` of one REST page (``ask`` fetches it), the empty ranges confirmed
    (``confirmed_answer``). The price kinds' REST paging (``qryptify.futures.sources``) uses
    it; the trade klines' backfiller asks ``confirmed_answer`` for topic values."""

    async def closed() -> list[Kline]:
        return closed_klines(await ask(), exchange_now_ms)

    def with_missing(first: list[Kline], second: list[Kline]) -> list[Kline]:
        seen = {k.open_time for k in first}
        extra = [k for k in second if k.open_time not in seen]
        return sorted([*first, *extra], key=lambda k: k.open_time) if extra else first

    return await confirmed_answer(
        pair,
        page,
        closed,
        lambda klines: [k.open_time for k in klines],
        with_missing,
        exchange_now_ms,
        limit,
    )


def ranges_to_units(interval: str, ranges: Sequence[tuple[int, int]], limit: int) -> list[RestUnit]:
    """REST pages for a list of ``[start, end)`` ranges (holes to refetch)."""
    return [RestUnit(p) for a, b in ranges for p in plan_pages(interval, a, b, limit)]
