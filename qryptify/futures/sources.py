"""Reading funding rates and price klines from the exchange: archive months, REST pages (and,
for the price kinds, the ranges those pages confirm empty).

REST ``/fapi/v1/fundingRate`` goes through the one ``BinanceRest`` (its weight budget, 429/418
handling and retries) at weight 1, and besides through ``FiveMinuteWindow``: the endpoint has
its own limit of 500 requests per 5 minutes per IP (shared with ``/fapi/v1/fundingInfo``).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from qryptify.binance.archive import ArchiveClient
from qryptify.binance.rest import BinanceRest, parse_klines
from qryptify.binance.weights import klines_weight
from qryptify.futures.funding import FundingArchiveFile, FundingRate, parse_archive_csv, parse_rest
from qryptify.futures.price import REST, PriceEmptyRange, PriceKind, PriceKline, from_kline
from qryptify.kline import Kline
from qryptify.pairs import Pair, last_closed_open, next_open
from qryptify.planning import Page, confirmed_page_events, plan_pages
from qryptify.publish import event_position

FUNDING_PATH = "/fapi/v1/fundingRate"
#: Weight counted against the shared per-minute budget (the documentation names only the
#: 500/5 min limit; counting 1 keeps the shared budget conservative).
FUNDING_WEIGHT = 1
WINDOW_REQUESTS = 500
WINDOW_S = 300.0


@dataclass(slots=True)
class FiveMinuteWindow:
    """At most ``requests`` requests in any ``window_s`` (wall seconds); pure but for
    ``now``. ``margin`` requests are left for other clients on the same IP."""

    requests: int = WINDOW_REQUESTS
    window_s: float = WINDOW_S
    margin: int = 10
    sent: deque[float] = field(default_factory=deque)

    def wait_s(self, now: float) -> float:
        """Seconds to wait before the next request may go (0: now); records it when 0."""
        while self.sent and self.sent[0] <= now - self.window_s:
            self.sent.popleft()
        if len(self.sent) >= self.requests - self.margin:
            return self.sent[0] + self.window_s - now
        self.sent.append(now)
        return 0.0


class FundingSource:
    """Funding rates of one exchange: archive months and REST pages."""

    def __init__(
        self,
        rest: BinanceRest,
        archive: ArchiveClient | None,
        *,
        page_limit: int = 1000,
        window: FiveMinuteWindow | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rest = rest
        self.archive = archive
        self.page_limit = page_limit
        self.window = window or FiveMinuteWindow()
        self._clock = clock
        self.requests = 0

    async def month(self, symbol: str, month_ms: int, ingested_at: int) -> list[FundingRate] | None:
        """The archive file of the month holding ``month_ms``: None when not published (404)
        or no archive is configured; ArchiveError / MalformedPayload when corrupt."""
        if self.archive is None:
            return None
        file = FundingArchiveFile.month(symbol, month_ms)
        csv = await self.archive._csv(file)
        if csv is None:
            return None
        return parse_archive_csv(csv, file, ingested_at)

    async def page(self, symbol: str, start_ms: int, end_ms: int) -> list[FundingRate]:
        """One REST page: fundings with ``start_ms <= time <= end_ms``, the first
        ``page_limit`` of them."""
        for _ in range(WINDOW_REQUESTS + 1):  # each wait frees at least one slot
            wait = self.window.wait_s(self._clock())
            if wait <= 0:
                break
            await asyncio.sleep(wait)
        params = {
            "symbol": symbol,
            "startTime": start_ms,
            "endTime": end_ms,
            "limit": self.page_limit,
        }
        body = await self.rest._get(FUNDING_PATH, params, weight=FUNDING_WEIGHT)
        self.requests += 1
        rows = parse_rest(symbol, body, self.rest.clock.now_ms())
        return [f for f in rows if start_ms <= f.funding_time <= end_ms]

    async def between(self, symbol: str, start_ms: int, end_ms: int) -> list[FundingRate]:
        """Every funding with ``start_ms <= time <= end_ms``, page after page."""
        out: list[FundingRate] = []
        cursor = start_ms
        while cursor <= end_ms:
            page = await self.page(symbol, cursor, end_ms)
            out += page
            if len(page) < self.page_limit:
                break
            cursor = page[-1].funding_time + 1
        return out


@dataclass(slots=True)
class PriceFetch:
    """What REST paging of one price series found: its closed candles and the ranges the
    exchange confirmed empty (both ascending), and the pages it took."""

    klines: list[PriceKline] = field(default_factory=list)
    empty: list[PriceEmptyRange] = field(default_factory=list)
    pages: int = 0

    def records(self) -> list[PriceKline | PriceEmptyRange]:
        """Candles and empty ranges in time order (a range after a candle of the same time),
        as the klines are published (``services/backfiller``)."""
        timed: list[tuple[int, int, PriceKline | PriceEmptyRange]] = [
            (k.open_time, 0, k) for k in self.klines
        ]
        timed += [(e.range.start_time, 1, e) for e in self.empty]
        timed.sort(key=lambda item: item[:2])
        return [record for _, _, record in timed]

    def position(self) -> int | None:
        """The open time a resume continues after: the newest candle or the last slot of the
        newest empty range (``publish.event_position``), None when nothing was found."""
        found = [k.open_time for k in self.klines] + [event_position(e.range) for e in self.empty]
        return max(found, default=None)


async def closed_price_klines(
    rest: BinanceRest,
    kind: PriceKind,
    pair: Pair,
    start_ms: int,
    now_ms: int,
    page_limit: int,
    end_ms: int | None = None,
) -> PriceFetch:
    """Every candle of the kind opening in ``[start_ms, end_ms)`` (to the newest candle
    closed at ``now_ms`` when ``end_ms`` is None; ``close_time < now_ms``), page after page of
    REST under the shared budget (the klines' weight by limit), and the ranges the exchange
    confirms empty. Pages are the klines' (``planning.plan_pages``: at most ``page_limit``
    slots each, so a short answer proves what it left out), confirmed as theirs
    (``planning.confirmed_page_events``: an answer leaving slots out is asked twice)."""
    path, param = REST[kind]
    stop = next_open(pair.interval, last_closed_open(pair.interval, now_ms))
    if end_ms is not None:
        stop = min(stop, end_ms)
    found = PriceFetch()
    for page in plan_pages(pair.interval, start_ms, stop, page_limit):
        params = {
            param: pair.symbol,
            "interval": pair.interval,
            "startTime": page.start_ms,
            "endTime": page.last_ms,
            "limit": page_limit,
        }

        async def ask(params: dict[str, object] = params, page: Page = page) -> list[Kline]:
            body = await rest._get(path, params, weight=klines_weight(page_limit))
            found.pages += 1
            rows = parse_klines(pair, body, rest.clock.now_ms())
            return [k for k in rows if page.start_ms <= k.open_time <= page.last_ms]

        closed, empty = await confirmed_page_events(pair, page, ask, now_ms, page_limit)
        found.klines += [from_kline(kind, k) for k in closed]
        found.empty += [PriceEmptyRange(kind, e) for e in empty]
    return found
