"""Async client for Binance USDⓈ-M Futures public REST market data.

One pooled ``httpx.AsyncClient`` for every request of the process; every request first takes
its weight from the shared :class:`~qryptify.binance.weights.WeightBudget` and gives the
exchange's ``X-MBX-USED-WEIGHT-1M`` back to it.

Failure handling per request (never by restarting a run):

* HTTP 429 → the budget pauses every request for ``Retry-After``; the request is sent again.
* HTTP 418 → the budget stops every request until the ban ends; the request is sent again.
* 5xx, 408, timeouts, connection errors → retried with the project's backoff
  (``qryptify.retry.backoff``, equal jitter), ``rest.retry_attempts`` tries, then
  ``ExchangeUnavailable``.
* Other 4xx with a Binance error body → ``ExchangeRejected(status, code, msg)`` at once.
* A body that is not what Binance sends → ``MalformedPayload``.

"Now" and "closed" come from the :class:`~qryptify.clock.ExchangeClock` this client keeps in
sync with ``/fapi/v1/time``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from bisect import bisect_right
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from qryptify import native
from qryptify.avro import EncodedKlines, KlineCodec, kline_encoder
from qryptify.binance.bounded import get_bounded
from qryptify.binance.weights import WeightBudget, best_page_limit, klines_weight
from qryptify.clock import Clock, ExchangeClock, MonotonicClock
from qryptify.config import RestConfig
from qryptify.errors import (
    ExchangeRejected,
    ExchangeUnavailable,
    IpBanned,
    MalformedPayload,
    RateLimited,
)
from qryptify.kline import Kline, closed_at, closed_klines, nested_deeper_than
from qryptify.pairs import Pair, next_open
from qryptify.retry import backoff

logger = logging.getLogger(__name__)

USED_WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
#: ``deliveryDate`` of perpetual contracts (2100-12-25 08:00 UTC).
PERPETUAL_DELIVERY_MS = 4_133_404_800_000
#: Binance codes that mean "try again later", whatever the HTTP status.
#: First ceiling of the backoff between tries of one request (seconds; doubles up to
#: ``rest.retry_max_wait_s``).
RETRY_INITIAL_S = 0.4
RETRYABLE_CODES = frozenset({-1000, -1001, -1006, -1007, -1008})
#: Give up on one request after this many 429/418 answers in a row.
MAX_RATE_LIMITED_ANSWERS = 1000
#: The largest REST body read: exchangeInfo (every symbol) is ~1-2 MB, a klines page ~0.3 MB.
MAX_BODY_BYTES = 16 * 1024 * 1024

_PAUSED = "qryptify_pause_applied"
_BAN_UNTIL_RE = re.compile(r"banned until (\d{12,14})")

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class SymbolInfo:
    """One ``symbols[]`` entry of exchangeInfo, the fields the ingestor needs."""

    symbol: str
    status: str
    contract_type: str
    onboard_date: int | None  # ms
    delivery_date: int | None  # ms; PERPETUAL_DELIVERY_MS for perpetuals

    @property
    def trading(self) -> bool:
        return self.status == "TRADING"

    @property
    def settles_at(self) -> int | None:
        """The delivery/settlement time when the contract ends before 2100, else None."""
        if self.delivery_date is None or self.delivery_date >= PERPETUAL_DELIVERY_MS:
            return None
        return self.delivery_date


@dataclass(frozen=True, slots=True)
class ExchangeInfo:
    symbols: Mapping[str, SymbolInfo]
    weight_limit: int | None  # REQUEST_WEIGHT per minute
    server_time: int | None


#: Binance's "Invalid symbol." error code: the symbol is not (or no longer) listed.
INVALID_SYMBOL = -1121


def is_unlisted_rejection(exc: BaseException) -> bool:
    """The exchange answered that the symbol does not exist (typo, delisted, not yet listed)."""
    return isinstance(exc, ExchangeRejected) and exc.code == INVALID_SYMBOL


@dataclass(slots=True)
class UnlistedPairs:
    """Configured pairs the exchange does not list. Each change is returned once, so services
    report a missing symbol once (not on every request) and go on with the other pairs."""

    pairs: set[Pair] = field(default_factory=set)

    def update(self, pairs: Sequence[Pair], info: ExchangeInfo) -> tuple[list[Pair], list[Pair]]:
        """``(newly unlisted, listed again)`` after a fresh exchangeInfo."""
        gone = [p for p in pairs if p.symbol not in info.symbols and p not in self.pairs]
        back = [p for p in pairs if p.symbol in info.symbols and p in self.pairs]
        self.pairs.update(gone)
        self.pairs.difference_update(back)
        return gone, back

    def mark(self, pair: Pair) -> bool:
        """A request for ``pair`` was answered "Invalid symbol": True the first time."""
        if pair in self.pairs:
            return False
        self.pairs.add(pair)
        return True

    def __contains__(self, pair: object) -> bool:
        return pair in self.pairs


@dataclass(slots=True)
class RestStats:
    requests: int = 0  # HTTP requests sent (including retries)
    retries: int = 0  # 5xx / timeout / connection retries
    klines_requests: int = 0
    klines_rows: int = 0
    status_counts: dict[int, int] = field(default_factory=dict)


def parse_exchange_info(body: object) -> ExchangeInfo:
    """Pure: the exchangeInfo JSON body → ExchangeInfo. Raises MalformedPayload."""
    if not isinstance(body, dict) or not isinstance(body.get("symbols"), list):
        raise MalformedPayload("rest", "exchangeInfo without a symbols list")
    symbols: dict[str, SymbolInfo] = {}
    for raw in body["symbols"]:
        if not isinstance(raw, dict) or not isinstance(raw.get("symbol"), str):
            raise MalformedPayload("rest", f"exchangeInfo symbol entry {raw!r:.80}")
        symbols[raw["symbol"]] = SymbolInfo(
            symbol=raw["symbol"],
            status=str(raw.get("status", "")),
            contract_type=str(raw.get("contractType", "")),
            onboard_date=_opt_int(raw.get("onboardDate")),
            delivery_date=_opt_int(raw.get("deliveryDate")),
        )
    limit: int | None = None
    for rl in body.get("rateLimits") or []:
        if (
            isinstance(rl, dict)
            and rl.get("rateLimitType") == "REQUEST_WEIGHT"
            and rl.get("interval") == "MINUTE"
            and rl.get("intervalNum") == 1
            and isinstance(rl.get("limit"), int)
        ):
            limit = int(rl["limit"])
    return ExchangeInfo(symbols, limit, _opt_int(body.get("serverTime")))


def _opt_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_klines(pair: Pair, body: object, ingested_at: int) -> list[Kline]:
    """Pure: a ``/fapi/v1/klines`` body → Klines (source "rest"), checked ascending."""
    if not isinstance(body, list):
        raise MalformedPayload("rest", f"klines body is {type(body).__name__}, not a list")
    klines = [fast_rest_row(pair.symbol, pair.interval, row, ingested_at) for row in body]
    for a, b in zip(klines, klines[1:], strict=False):
        if b.open_time <= a.open_time:
            raise MalformedPayload(
                "rest", f"{pair} klines not ascending: {b.open_time} after {a.open_time}"
            )
    return klines


KLINES_PATH = "/fapi/v1/klines"
#: An exchange clock no close time reaches: the compiled core then keeps every candle.
_NO_CLOCK = 2**63 - 1


def json_body(path: str, body: bytes) -> Any:
    """A REST answer's body → its JSON value; ``MalformedPayload`` naming ``path`` when it is
    not JSON or nested absurdly deep (the one check for every endpoint and both cores)."""
    try:
        decoded = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        text = body.decode("utf-8", "replace")[:80]
        raise MalformedPayload("rest", f"GET {path}: body is not JSON: {text!r}") from None
    if nested_deeper_than(decoded):
        raise MalformedPayload("rest", f"GET {path}: JSON nested too deeply")
    return decoded


def check_within(pair: Pair, open_times: Sequence[int], start_ms: int, end_ms: int) -> None:
    """Every candle of a page asked for ``[start_ms, end_ms]`` (open times, ascending) lies
    in it, the still-open one included; ``MalformedPayload`` names the first that does not."""
    outside = [t for t in open_times[:1] if t < start_ms]
    outside += [t for t in open_times[bisect_right(open_times, end_ms) :][:1]]
    if outside:
        raise MalformedPayload("rest", f"{pair} kline {outside[0]} outside [{start_ms}, {end_ms}]")


def page_values(
    pair: Pair,
    body: bytes,
    ingested_at: int,
    exchange_now_ms: int,
    codec: KlineCodec,
    *,
    within: tuple[int, int] | None = None,
    native_ok: bool = True,
) -> EncodedKlines:
    """A raw ``/fapi/v1/klines`` body → the topic values of its candles closed by the exchange
    clock (``close_time < exchange_now_ms``, as ``page_events`` decides), ascending.

    The same candles and errors as ``BinanceRest.klines`` (``json_body`` + ``parse_klines`` +
    ``check_within`` on every candle, open ones included, when ``within`` is given) followed
    by the closed filter and ``codec.encode``; a page of plain rows runs in the compiled
    core when it is active and the codec has its fast Kline encoder (``native_ok=False``:
    never, for tests comparing the two; tests/unit/native/test_rest_page.py)."""
    rows: EncodedKlines | None = None
    encoder = kline_encoder(codec)
    if encoder is not None and native.MODULE is not None and native_ok:
        head, tail = encoder.row_frame(pair.symbol, pair.interval, "rest", ingested_at)
        found = native.MODULE.rest_page_values(body, head, tail, _NO_CLOCK)
        if found is not None:
            rows = EncodedKlines(pair.symbol, pair.interval, *found)
    if rows is None:
        klines = parse_klines(pair, json_body(KLINES_PATH, body), ingested_at)
        rows = EncodedKlines(
            pair.symbol,
            pair.interval,
            [k.open_time for k in klines],
            [k.close_time for k in klines],
            [codec.encode(k) for k in klines],
        )
    if within is not None:
        check_within(pair, rows.open_times, *within)
    if rows.close_times and not closed_at(max(rows.close_times), exchange_now_ms):
        rows = rows.pick(
            [i for i, t in enumerate(rows.close_times) if closed_at(t, exchange_now_ms)]
        )
    return rows


_DEC = r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?"
#: The eight decimal columns of a row, joined by commas (no decimal contains a comma).
_DECIMALS_RE = re.compile(rf"^(?:{_DEC},){{7}}{_DEC}$")


def fast_rest_row(symbol: str, interval: str, row: object, ingested_at: int) -> Kline:
    """``Kline.from_rest_row`` with one regex for all decimals: same rules, ~8x faster.

    Anything the fast path does not accept goes through ``from_rest_row`` for its precise
    error (or its acceptance).
    """
    if type(row) is list and len(row) >= 11:
        t, o, h, lo, c, v, ct, q, n, tb, tq = row[:11]
        if type(t) is int and type(ct) is int and type(n) is int:
            try:
                joined = ",".join((o, h, lo, c, v, q, tb, tq))  # TypeError unless all str
            except TypeError:
                joined = ""
            if _DECIMALS_RE.match(joined):
                return Kline(symbol, interval, t, ct, o, h, lo, c, v, q, n, tb, tq, "rest",
                             ingested_at)  # fmt: skip
    return Kline.from_rest_row(symbol, interval, row, ingested_at)


def parse_retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def _is_retryable_status(status: int) -> bool:
    return status >= 500 or status == 408


class BinanceRest:
    """Binance futures REST client: shared pool, shared weight budget, exchange clock.

    Use as ``async with BinanceRest(cfg) as rest:`` (or call ``aclose()``). ``transport``
    replaces the network (``httpx.MockTransport`` in unit tests); ``sleep`` replaces
    ``asyncio.sleep``.
    """

    def __init__(
        self,
        cfg: RestConfig,
        *,
        budget: WeightBudget | None = None,
        clock: ExchangeClock | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        budget_clock: Clock | None = None,
    ) -> None:
        self.cfg = cfg
        self.budget = budget or WeightBudget(
            cfg.weight_limit, cfg.weight_safety_margin, window_ms=int(cfg.weight_window_s * 1000)
        )
        self.clock = clock or ExchangeClock()
        self.stats = RestStats()
        self.page_limit = best_page_limit(cfg.klines_limit)
        self._sleep = sleep
        # The budget runs on a wall-speed monotonic clock: weight windows are wall time even
        # when the exchange clock is a simulator's accelerated one.
        self._budget_clock = budget_clock or MonotonicClock()
        self._last_sync_local_ms: int | None = None
        limits = httpx.Limits(
            max_connections=cfg.max_connections, max_keepalive_connections=cfg.max_connections
        )
        self._slots = asyncio.Semaphore(cfg.max_connections)
        self._http = httpx.AsyncClient(
            base_url=cfg.endpoint,
            timeout=httpx.Timeout(cfg.timeout_s),
            limits=limits,
            transport=transport,
            headers={"User-Agent": "qryptify-ingestor"},
            event_hooks={"request": [self._hold_while_paused], "response": [self._on_response]},
        )

    async def __aenter__(self) -> BinanceRest:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def budget_now_ms(self) -> int:
        """Now on the weight budget's clock (wall-speed monotonic)."""
        return self._budget_clock.now_ms()

    # -- endpoints -------------------------------------------------------------------------
    async def server_time(self) -> int:
        """``GET /fapi/v1/time``; measures the exchange-clock offset. Returns server ms."""
        sent = self.clock.local_ms()
        body = await self._get("/fapi/v1/time", {}, weight=1)
        received = self.clock.local_ms()
        server = body.get("serverTime") if isinstance(body, dict) else None
        if not isinstance(server, int) or isinstance(server, bool):
            raise MalformedPayload("rest", f"/fapi/v1/time body {body!r:.80}")
        self.clock.observe(sent, received, server)
        self._last_sync_local_ms = received
        return server

    async def ensure_clock(self, max_age_s: float | None = None) -> None:
        """Sync the exchange clock if never synced or older than ``max_age_s``."""
        age_limit_ms = (self.cfg.time_sync_every_s if max_age_s is None else max_age_s) * 1000
        last = self._last_sync_local_ms
        if last is None or self.clock.local_ms() - last >= age_limit_ms:
            await self.server_time()

    async def exchange_info(self) -> ExchangeInfo:
        """``GET /fapi/v1/exchangeInfo``; adopts its REQUEST_WEIGHT limit into the budget."""
        info = parse_exchange_info(await self._get("/fapi/v1/exchangeInfo", {}, weight=1))
        if info.weight_limit is not None and info.weight_limit != self.budget.limit:
            logger.info(
                "exchange REQUEST_WEIGHT limit %d/min (was %d)",
                info.weight_limit,
                self.budget.limit,
            )
            self.budget.set_limit(info.weight_limit)
        return info

    async def klines(
        self, pair: Pair, start_ms: int, end_ms: int, limit: int | None = None
    ) -> list[Kline]:
        """One ``/fapi/v1/klines`` page: candles with ``start_ms <= open_time <= end_ms``.

        Returns what the exchange sent, possibly including the still-open candle; use
        ``closed_klines_between`` or filter with ``Kline.is_closed(clock.now_ms())``.
        """
        limit = self.page_limit if limit is None else limit
        body = json_body(KLINES_PATH, await self._klines_body(pair, start_ms, end_ms, limit))
        klines = parse_klines(pair, body, self.clock.now_ms())
        self.stats.klines_requests += 1
        self.stats.klines_rows += len(klines)
        check_within(pair, [k.open_time for k in klines], start_ms, end_ms)
        return klines

    async def klines_values(
        self,
        pair: Pair,
        start_ms: int,
        end_ms: int,
        limit: int,
        *,
        codec: KlineCodec,
        exchange_now_ms: int,
    ) -> EncodedKlines:
        """``klines`` without a Kline per candle: the page's candles closed by
        ``exchange_now_ms``, as topic values straight from the raw body (``page_values``: the
        compiled core when it is active). The same requests, checks and errors."""
        body = await self._klines_body(pair, start_ms, end_ms, limit)
        rows = page_values(
            pair,
            body,
            self.clock.now_ms(),
            exchange_now_ms,
            codec,
            within=(start_ms, end_ms),
        )
        self.stats.klines_requests += 1
        self.stats.klines_rows += len(rows)
        return rows

    async def _klines_body(self, pair: Pair, start_ms: int, end_ms: int, limit: int) -> bytes:
        params = {
            "symbol": pair.symbol,
            "interval": pair.interval,
            "startTime": start_ms,
            "endTime": end_ms,
            "limit": limit,
        }
        return await self._get_raw(KLINES_PATH, params, weight=klines_weight(limit))

    async def latest_klines(self, pair: Pair, limit: int = 1) -> list[Kline]:
        """The most recent ``limit`` candles (no start or end time): for a contract that
        stopped trading, its last candles. May include the still-open candle."""
        params = {"symbol": pair.symbol, "interval": pair.interval, "limit": limit}
        body = await self._get(KLINES_PATH, params, weight=klines_weight(limit))
        self.stats.klines_requests += 1
        return parse_klines(pair, body, self.clock.now_ms())

    async def closed_klines_between(
        self, pair: Pair, start_ms: int, end_ms: int, limit: int | None = None
    ) -> list[Kline]:
        """Every closed candle with ``start_ms <= open_time < end_ms``, paging by open time.

        Candles not closed by the exchange clock (``close_time >= now``) are dropped, and
        paging stops there. For long ranges prefer the backfiller's planned pages.
        """
        await self.ensure_clock()
        limit = self.page_limit if limit is None else limit
        found: list[Kline] = []
        cursor = start_ms
        while cursor < end_ms:
            page = await self.klines(pair, cursor, end_ms - 1, limit)
            now = self.clock.now_ms()
            closed = closed_klines(page, now)
            found.extend(closed)
            if len(page) < limit or len(closed) < len(page):
                break
            cursor = next_open(pair.interval, page[-1].open_time)
        return found

    # -- transport -------------------------------------------------------------------------
    async def _get(self, path: str, params: Mapping[str, Any], weight: int) -> Any:
        """``_get_raw``'s body as JSON (``json_body``)."""
        return json_body(path, await self._get_raw(path, params, weight))

    async def _get_raw(self, path: str, params: Mapping[str, Any], weight: int) -> bytes:
        """``_send`` with up to ``rest.retry_attempts`` tries while the exchange is unavailable
        (429/418 are waited out inside ``_send`` by the budget and not retried again here)."""
        maximum_s = self.cfg.retry_max_wait_s
        delays = backoff(min(RETRY_INITIAL_S, maximum_s), maximum_s, jitter=0.5)
        attempt = 1
        while True:
            try:
                return await self._send(path, params, weight)
            except ExchangeUnavailable as exc:
                if attempt >= self.cfg.retry_attempts:
                    raise
                self.stats.retries += 1
                logger.warning("REST retry %d/%d after: %s", attempt, self.cfg.retry_attempts, exc)
            await self._sleep(next(delays))
            attempt += 1

    async def _acquire(self, weight: int) -> int:
        """Wait until the budget admits ``weight``; return when it was sent (budget clock)."""
        while True:
            now = self._budget_clock.now_ms()
            wait_ms = self.budget.reserve(weight, now)
            if wait_ms <= 0:
                return now
            await self._sleep(wait_ms / 1000)

    async def _hold_while_paused(self, request: httpx.Request) -> None:
        """httpx request hook, the last step before the request goes out: a request the budget
        admitted before another one's 429/418 paused every request waits out that pause too
        (a 429 storm test caught one sent inside a Retry-After)."""
        while (wait_ms := self.budget.blocked_until() - self._budget_clock.now_ms()) > 0:
            await self._sleep(wait_ms / 1000)

    async def _on_response(self, resp: httpx.Response) -> None:
        """httpx response hook: runs as soon as the status line and headers arrive, before
        the body is read, so a 429/418 pauses every other request at once."""
        if resp.status_code in (429, 418):
            self._pause(resp)

    def _pause(self, resp: httpx.Response) -> int:
        """Apply a 429/418's pause to the budget once per response; returns its end."""
        if resp.extensions.get(_PAUSED):
            return self.budget.blocked_until()
        now = self._budget_clock.now_ms()
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        if resp.status_code == 429:
            resp.extensions[_PAUSED] = True
            return self.budget.on_429(retry_after, now)
        if retry_after is not None:  # 418: without Retry-After the body names the end
            resp.extensions[_PAUSED] = True
            return self.budget.on_418(now, retry_after_s=retry_after)
        return self.budget.blocked_until()

    async def _send(self, path: str, params: Mapping[str, Any], weight: int) -> bytes:
        """One request, re-sent after 429/418 once the budget allows; 5xx etc. raise. Returns
        the body as sent (``json_body`` decodes it)."""
        for _ in range(MAX_RATE_LIMITED_ANSWERS):
            # A request waits for a connection HERE, before the budget check, never inside
            # httpx's pool after it: a 429/418 pause then holds every request not yet sent.
            async with self._slots:
                sent_ms = await self._acquire(weight)
                self.stats.requests += 1
                try:
                    resp = await get_bounded(
                        self._http,
                        path,
                        MAX_BODY_BYTES,
                        lambda why: MalformedPayload("rest", f"GET {path}: {why}"),
                        params,
                    )
                except httpx.TimeoutException as exc:
                    self.budget.release(weight)
                    raise ExchangeUnavailable(
                        f"GET {path}: timeout ({type(exc).__name__})"
                    ) from None
                except httpx.TransportError as exc:
                    self.budget.release(weight)
                    raise ExchangeUnavailable(f"GET {path}: {type(exc).__name__} {exc}") from None
            now = self._budget_clock.now_ms()
            status = resp.status_code
            self.stats.status_counts[status] = self.stats.status_counts.get(status, 0) + 1
            self.budget.after_response(_used_weight(resp), now, weight=weight, sent_ms=sent_ms)
            if status == 429:
                until = self._pause(resp)
                logger.warning("HTTP 429 on %s: pausing all requests %d ms", path, until - now)
                continue
            if status == 418:
                until = self._pause(resp)
                if not resp.extensions.get(_PAUSED):
                    ban_end = _ban_until(resp)  # exchange time → budget clock
                    until = self.budget.on_418(
                        now,
                        until_ms=None if ban_end is None else now + ban_end - self.clock.now_ms(),
                    )
                logger.error(
                    "HTTP 418 (IP banned) on %s: stopping all requests until %d", path, until
                )
                continue
            if status >= 400:
                raise _error_for(path, resp)
            return resp.content
        now = self._budget_clock.now_ms()
        if self.budget.is_banned(now):
            raise IpBanned(self.clock.now_ms() + self.budget.blocked_until() - now)
        raise RateLimited((self.budget.blocked_until() - now) / 1000)


def _used_weight(resp: httpx.Response) -> int | None:
    value = resp.headers.get(USED_WEIGHT_HEADER)
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def _error_body(resp: httpx.Response) -> tuple[int | None, str]:
    try:
        body = resp.json()
    except (ValueError, RecursionError):
        return None, resp.text[:200]
    if nested_deeper_than(body):
        return None, resp.text[:200]
    if isinstance(body, dict):
        code = body.get("code")
        return (code if isinstance(code, int) else None), str(body.get("msg", ""))[:200]
    return None, str(body)[:200]


def _ban_until(resp: httpx.Response) -> int | None:
    _code, msg = _error_body(resp)
    match = _BAN_UNTIL_RE.search(msg)
    return int(match.group(1)) if match else None


def _error_for(path: str, resp: httpx.Response) -> Exception:
    code, msg = _error_body(resp)
    if _is_retryable_status(resp.status_code) or code in RETRYABLE_CODES:
        return ExchangeUnavailable(f"GET {path}: HTTP {resp.status_code} code={code} {msg}")
    return ExchangeRejected(resp.status_code, code, msg)
