"""The backfiller's I/O: exchangeInfo → resume points → gap finder → archive + REST → Kafka.

One asyncio loop. Every pair runs as its own task (``backfill.concurrency`` at a time) and
walks its planned units (archive files, REST pages) in open-time order, fetching a few ahead;
everything goes through one ``BinanceRest`` (one pooled client, one weight budget). Records
are published in open-time order per pair, and a background task commits each pair's source
offset once Kafka acknowledged everything up to it.

After catching up it either exits (``backfill.exit_when_done``) or, every
``backfill.recheck_every_s``, publishes what closed since and re-reads the last
``backfill.recheck_recent`` candles per pair, publishing only those that changed.

Every archive file it publishes from goes into the archive ledger (``qryptify.archive_ledger``)
once Kafka acknowledged the file's candles. Between passes, when ``backfill.audit_every_s``
have gone by since the last audit (of any process: the time is in the ledger), it audits them
(``qryptify.audit``): re-uploaded files are re-ingested and their changes published.

Beside this module: ``fetch`` (units → results, a few ahead), ``units`` (what a unit produced,
validated and merged in publish order), ``progress`` (per-pair state, bar / log lines),
``report`` (the summary line).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from prometheus_client import Counter, Gauge

from qryptify import db
from qryptify.archive_ledger import ArchiveLedger, IngestedFile
from qryptify.audit import ArchiveAudit
from qryptify.binance.archive import ArchiveClient
from qryptify.binance.rest import (
    BinanceRest,
    ExchangeInfo,
    UnlistedPairs,
    is_unlisted_rejection,
)
from qryptify.config import Config
from qryptify.errors import (
    ArchiveError,
    ConfigError,
    DatabaseUnavailable,
    ExchangeError,
    IngestorError,
    is_retryable,
)
from qryptify.gaps import Range, holes_below
from qryptify.handoff import LIVE_START, PLAN, plan_falls_short, planned_through
from qryptify.kline import Kline
from qryptify.metrics import Health
from qryptify.offsets import SourceOffsetStore
from qryptify.pairs import Pair, align_open, count_opens, next_open
from qryptify.planning import (
    RestUnit,
    Unit,
    pair_range,
    plan_pages,
    plan_units,
    ranges_to_units,
)
from qryptify.publish import KlinePublisher
from qryptify.retry import backoff, sleep_unless_stopped, until_available
from services.backfiller.fetch import UnitFetcher
from services.backfiller.futures import FuturesPasses
from services.backfiller.progress import PairState, Progress
from services.backfiller.report import Summary
from services.backfiller.units import UnitResult

logger = logging.getLogger(__name__)

SERVICE = "backfiller"
PUBLISH_CHUNK = 5_000  # events published between yields to the event loop
COMMIT_EVERY_S = 0.5

CANDLES = Counter(
    "qryptify_backfill_candles_total", "Closed candles published", ["symbol", "interval", "source"]
)
EMPTY = Counter("qryptify_backfill_empty_ranges_total", "Exchange-confirmed empty ranges")
WEIGHT = Gauge("qryptify_backfill_weight_used", "Request weight counted in the last minute")


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


class Backfiller:
    """Runs backfill passes; ``run()`` is the service entry point (returns the exit code)."""

    def __init__(
        self,
        cfg: Config,
        *,
        rest: BinanceRest,
        publisher: KlinePublisher,
        offsets: SourceOffsetStore,
        archive: ArchiveClient | None = None,
        ledger: ArchiveLedger | None = None,
        connect_db: Callable[[], db.Connection] | None = None,
        stop: threading.Event | None = None,
        health: Health | None = None,
        service: str = SERVICE,
        futures: FuturesPasses | None = None,
    ) -> None:
        self.cfg = cfg
        #: The futures passes (``futures`` config), run after each kline pass.
        self.futures = futures
        self.rest = rest
        self.publisher = publisher
        self.offsets = offsets
        self.archive = archive
        self.ledger = ledger
        #: Archive files published and not yet acknowledged: (pair, position, entry).
        self._unrecorded: list[tuple[Pair, int, IngestedFile]] = []
        self._last_audit_s = time.time()
        self.connect_db = connect_db
        self.stop = stop or threading.Event()
        self.health = health or Health()
        self.service = service
        self.states: dict[Pair, PairState] = {p: PairState(p) for p in cfg.pairs}
        self.unlisted = UnlistedPairs()
        self.summary = Summary()
        self.limit = rest.page_limit
        self.fetcher = UnitFetcher(rest, archive, publisher.codec, limit=self.limit)
        self._pairs_sem = asyncio.Semaphore(cfg.backfill.concurrency)
        self._started = time.monotonic()
        self.passes = 0
        self._progress = Progress([])
        self._fatal: Exception | None = None
        #: Exchange time each pass planned up to (closed candles open before their range end).
        self.pass_now_ms: int | None = None

    # -- entry points ----------------------------------------------------------------------
    def run(self) -> int:
        """Service entry point: 0 when every pair caught up (or on a requested stop)."""
        asyncio.run(self.run_async())
        return 1 if self.summary.failed_pairs else 0

    async def run_async(self) -> Summary:
        self._pairs_sem = asyncio.Semaphore(self.cfg.backfill.concurrency)
        self.fetcher = UnitFetcher(self.rest, self.archive, self.publisher.codec, limit=self.limit)
        self._started = time.monotonic()
        committer = asyncio.create_task(self._commit_loop())
        try:
            await self._main()
            if self._fatal is not None:
                raise self._fatal
        finally:
            committer.cancel()
            await asyncio.gather(committer, return_exceptions=True)
            try:
                await asyncio.to_thread(self._flush_and_commit)
            except Exception as exc:
                if self._fatal is None:
                    raise
                logger.error("final flush: %s", exc)  # the run already failed with _fatal
            finally:
                await self.rest.aclose()
                if self.archive is not None:
                    await self.archive.aclose()
                self._finish_summary()
                logger.info("%s", self.summary.line())
        return self.summary

    async def _main(self) -> None:
        if not self.cfg.pairs:
            raise ConfigError("pairs", [], "no pairs configured: nothing to backfill")
        self.health.set(False, "reading exchangeInfo")
        info = await until_available(
            self.rest.exchange_info, self.stop, what="exchangeInfo", health=self.health
        )
        if info is None:  # stop requested before the exchange answered
            return
        self._validate_symbols(info)
        loaded = await asyncio.to_thread(self.offsets.load, self.service)
        for pair, position in loaded.items():
            if pair in self.states:
                self.states[pair].position = position
        logger.info(
            "resuming %d of %d pairs from stored source offsets", len(loaded), len(self.states)
        )
        if self.ledger is not None:
            files = await asyncio.to_thread(self.ledger.load)
            last = self.ledger.last_audit
            if last is not None:
                self._last_audit_s = last.finished_at / 1000
            logger.info(
                "archive ledger: %d files published from; last audit %s",
                len(files),
                "never" if last is None else _dt(last.finished_at).isoformat(),
            )
        self._ready("backfilling")
        first = True
        outage_delays = backoff()
        while not self.stop.is_set():
            try:
                await self._guarded(self._pass(first))
                if self.futures is not None and not self.stop.is_set():
                    infos = {p.symbol: s.info for p, s in self.states.items() if s.info}
                    await self._guarded(self.futures.run_pass(infos))
            except IngestorError as exc:
                if not is_retryable(exc):
                    raise
                # The exchange (or the database) went away mid-pass, after the per-request
                # retries: stay up and run the pass again later; it resumes from the
                # acknowledged positions.
                delay = next(outage_delays)
                self.health.set(False, f"unavailable: {exc}")
                logger.warning("pass interrupted, retrying in %.0fs: %s", delay, exc)
                await sleep_unless_stopped(delay, self.stop)
                continue
            outage_delays = backoff()
            self.passes += 1
            if first and not self.stop.is_set():
                self._finish_summary()
                logger.info("caught up: %s", self.summary.line())
                self._ready("caught up")
            first = False
            if self._audit_due():
                await self._guarded(self._audit())
            if self.cfg.backfill.exit_when_done or self.stop.is_set():
                break
            await self._guarded(self._sleep(self.cfg.backfill.recheck_every_s))

    def _audit_due(self) -> bool:
        every = self.cfg.backfill.audit_every_s
        if not every or self.ledger is None or self.archive is None or self.stop.is_set():
            return False
        return time.time() - self._last_audit_s >= every

    async def _audit(self) -> None:
        """The periodic archive audit, between passes (low priority: nothing else runs)."""
        assert self.ledger is not None and self.archive is not None  # noqa: S101 - _audit_due
        await asyncio.to_thread(self._flush_and_commit)  # every used file is in the ledger
        audit = ArchiveAudit(
            archive=self.archive,
            rest=self.rest,
            publisher=self.publisher,
            ledger=self.ledger,
            stop=self.stop,
        )
        try:
            found = await audit.run()
        except (ExchangeError, ArchiveError) as exc:
            logger.warning("archive audit interrupted, tried again next time: %s", exc)
            return
        finally:
            self._last_audit_s = time.time()
        self.summary.audits += 1
        self.summary.audit_files_reingested += found.files_reingested
        self.summary.audit_candles_corrected += found.candles_corrected

    async def _guarded(self, work: Awaitable[None]) -> None:
        """Run ``work`` until it ends or a stop is requested (SIGTERM)."""
        task = asyncio.ensure_future(work)
        while not task.done():
            await asyncio.wait({task}, timeout=0.2)
            if self.stop.is_set() and not task.done():
                logger.info("stop requested: cancelling the pass")
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                return
        task.result()

    async def _sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def _validate_symbols(self, info: ExchangeInfo) -> None:
        """Adopt exchangeInfo: a symbol it does not list is reported once and skipped (the
        other pairs go on); one listed again is picked up."""
        gone, back = self.unlisted.update(self.cfg.pairs, info)
        for pair in gone:
            self._report_unlisted(pair, "not listed on the exchange (exchangeInfo)")
        for pair in back:
            logger.warning("%s: listed on the exchange again; backfilling it", pair)
        for pair in self.cfg.pairs:
            sym = info.symbols.get(pair.symbol)
            if sym is None:
                self.states[pair].info = None
                continue
            if not sym.trading and self.states[pair].info != sym:
                logger.warning(
                    "%s status %s: backfilled up to its last candle%s, not live",
                    pair.symbol,
                    sym.status,
                    f" (settles {_dt(sym.settles_at):%Y-%m-%d %H:%M} UTC)"
                    if sym.settles_at
                    else "",
                )
            self.states[pair].info = sym
        self._note_unlisted()

    def _report_unlisted(self, pair: Pair, why: str) -> None:
        index = self.cfg.pairs.index(pair)
        logger.error(
            "pairs[%d] %s: symbol %s %s; skipped, the other pairs go on",
            index,
            pair,
            pair.symbol,
            why,
        )

    def _note_unlisted(self) -> None:
        self.summary.unlisted_pairs = [str(p) for p in self.cfg.pairs if p in self.unlisted]

    def _ready(self, reason: str) -> None:
        if self.summary.unlisted_pairs:
            reason += f"; not listed (skipped): {', '.join(self.summary.unlisted_pairs)}"
        self.health.set(True, reason)

    async def _last_candle_end(self, state: PairState) -> int | None:
        """For a contract not trading and without a settlement date: the exclusive end of its
        last candle (asked once), so no empty range is recorded for the time after it."""
        if state.last_end_ms is None:
            latest = await self.rest.latest_klines(state.pair, 1)
            state.last_end_ms = (
                next_open(state.pair.interval, latest[-1].open_time) if latest else 0
            )
        return state.last_end_ms

    # -- one pass --------------------------------------------------------------------------
    async def _pass(self, first: bool) -> None:
        if not first:
            # Symbols get delisted and listed while we run: a pass plans with today's list.
            self._validate_symbols(await self.rest.exchange_info())
        now = await self.rest.server_time()  # the exchange's word on what is closed
        await self._plan_ranges(now)
        short = await asyncio.to_thread(self._promise, now)
        if short:
            # A producer went live after this pass's "now" (qryptify.handoff): the candles in
            # between are ours. It read the exchange time before our read of its mark, so the
            # exchange's time now is past its live start.
            now = await self.rest.server_time()
            await self._plan_ranges(now)
            short = await asyncio.to_thread(self._promise, now)
            if short:
                logger.warning("live start still ahead of the exchange's time for %s", short)
        self.pass_now_ms = now
        holes: dict[Pair, list[Range]] = {}
        if first and self.connect_db is not None:
            holes = await asyncio.to_thread(self._find_db_holes)
        jobs = []
        progress_states = []
        for state in self.states.values():
            rng = state.range
            if rng is None:
                continue
            resume = rng.start_ms
            if state.position is not None and state.position >= rng.start_ms:
                resume = next_open(state.pair.interval, state.position)
            pair_holes = holes_below(holes.get(state.pair, []), resume)
            units: list[Unit] = list(ranges_to_units(state.pair.interval, pair_holes, self.limit))
            recheck: list[RestUnit] = []
            if not first and state.position is not None and self.cfg.backfill.recheck_recent:
                recheck = self._recheck_units(state, resume)
            units += plan_units(
                state.pair,
                resume,
                rng.end_ms,
                now,
                limit=self.limit,
                archive=self.archive is not None and self.cfg.archive.enabled,
            )
            state.total = count_opens(state.pair.interval, resume, rng.end_ms) + sum(
                count_opens(state.pair.interval, a, b) for a, b in pair_holes
            )
            state.done = 0
            progress_states.append(state)
            jobs.append(self._pair_job(state, recheck, units, now))
        progress = Progress(progress_states)
        self._progress = progress
        try:
            await asyncio.gather(*jobs)
        finally:
            progress.close()
            if not sys.stderr.isatty():
                progress.log()

    async def _plan_ranges(self, now: int) -> None:
        start_ms = self.cfg.backfill.start_ms
        for state in self.states.values():
            if state.pair in self.unlisted:
                state.range = None
                continue
            info = state.info
            settles = info.settles_at if info else None
            if info is not None and not info.trading and settles is None:
                settles = await self._last_candle_end(state)
            state.range = pair_range(
                state.pair,
                start_ms,
                now,
                onboard_ms=info.onboard_date if info else None,
                settles_at_ms=settles,
            )

    def _promise(self, now: int) -> list[Pair]:
        """Mark where this pass ends (acknowledged by Kafka), then read the producer's live
        starts: the pairs whose live start lies beyond this pass (``qryptify.handoff``)."""
        plans = {
            state.pair: planned_through(state.pair.interval, now)
            for state in self.states.values()
            if state.range is not None  # not an unlisted symbol
        }
        for pair, plan in plans.items():
            self.offsets.commit(PLAN, pair, plan)
        self.offsets.acknowledge()
        starts = self.offsets.load(LIVE_START)
        return [pair for pair, plan in plans.items() if plan_falls_short(plan, starts.get(pair))]

    def _recheck_units(self, state: PairState, resume: int) -> list[RestUnit]:
        rng = state.range
        position = state.position
        if rng is None or position is None:
            return []
        first = position
        for _ in range(self.cfg.backfill.recheck_recent - 1):  # n-1 candles back (1M too)
            earlier = align_open(state.pair.interval, first - 1)
            if earlier < rng.start_ms:
                break
            first = earlier
        return [RestUnit(p) for p in plan_pages(state.pair.interval, first, resume, self.limit)]

    def _find_db_holes(self) -> dict[Pair, list[Range]]:
        """Gap finder: holes in the DB below what the sink has written, per pair."""
        assert self.connect_db is not None  # noqa: S101 - checked by the caller
        try:
            conn = self.connect_db()
        except DatabaseUnavailable as exc:
            logger.warning("gap finder skipped: %s", exc)
            return {}
        found: dict[Pair, list[Range]] = {}
        try:
            for state in self.states.values():
                rng = state.range
                if rng is None or rng.empty:
                    continue
                written = db.sync_pointer(conn, state.pair.symbol, state.pair.interval)
                if written is None:
                    continue
                upper = next_open(state.pair.interval, written)
                if state.position is not None:
                    upper = min(upper, next_open(state.pair.interval, state.position))
                holes = db.stored_holes(
                    conn,
                    state.pair.symbol,
                    state.pair.interval,
                    rng.start_ms,
                    min(upper, rng.end_ms),
                )
                if holes:
                    missing = sum(count_opens(state.pair.interval, a, b) for a, b in holes)
                    logger.warning(
                        "gap finder: %s has %d holes (%d candles) in the database; refetching",
                        state.pair,
                        len(holes),
                        missing,
                    )
                    found[state.pair] = holes
                    self.summary.gap_holes += len(holes)
        except Exception as exc:  # noqa: BLE001 - the gap finder is an extra; resume still works
            logger.warning("gap finder failed (continuing without it): %s", exc)
        finally:
            conn.close()
        return found

    async def _pair_job(
        self, state: PairState, recheck: list[RestUnit], units: list[Unit], now: int
    ) -> None:
        async with self._pairs_sem:
            try:
                if recheck:
                    await self._recheck(state, recheck, now)
                async for result in self.fetcher.results(state.pair, units, now):
                    await self._publish(state, result)
            except (ExchangeError, ArchiveError) as exc:
                if is_unlisted_rejection(exc):
                    # Delisted while we run: reported once, like one missing at start.
                    if self.unlisted.mark(state.pair):
                        self._report_unlisted(state.pair, f"no longer listed ({exc})")
                    self._note_unlisted()
                    return
                state.failed = str(exc)
                logger.error("%s failed, resumes on the next run: %s", state.pair, exc)

    async def _recheck(self, state: PairState, units: list[RestUnit], now: int) -> None:
        changed: list[Kline] = []
        codec = self.publisher.codec
        for unit in units:
            result = await self.fetcher.fetch_rest(state.pair, unit, now)
            # A few candles per pair: compared as Klines with what this process published.
            fetched = [codec.decode(v) for block in result.rest for v in block.values]
            for k in fetched:
                if not isinstance(k, Kline):
                    continue
                seen = state.recent.get(k.open_time)
                if seen is None or not seen.same_values(k):
                    changed.append(k)
        if changed:
            logger.info("recheck %s: %d candles changed on the exchange", state.pair, len(changed))
            self.summary.corrections += len(changed)
            for k in changed:
                self.publisher.publish(k)
                self._remember(state, k)

    # -- publishing ------------------------------------------------------------------------
    async def _publish(self, state: PairState, result: UnitResult) -> None:
        pair = state.pair
        codec = self.publisher.codec
        positions, values, recent = result.encoded(codec)
        for i in range(0, len(values), PUBLISH_CHUNK):
            chunk = positions[i : i + PUBLISH_CHUNK]
            self.publisher.publish_encoded(pair, max(chunk), values[i : i + PUBLISH_CHUNK])
            self.publisher.producer.poll(0)
            await asyncio.sleep(0)
        archive_n, rest_n = result.archive_candles, result.rest_candles
        if archive_n:
            CANDLES.labels(pair.symbol, pair.interval, "archive").inc(archive_n)
        if rest_n:
            CANDLES.labels(pair.symbol, pair.interval, "rest").inc(rest_n)
        EMPTY.inc(len(result.empty))
        self.summary.candles += result.candles
        self.summary.archive_candles += archive_n
        self.summary.empty_ranges += len(result.empty)
        for r in result.empty:
            logger.warning(
                "%s: exchange has no candles in [%s, %s): recorded as empty range",
                pair,
                _dt(r.start_time).isoformat(),
                _dt(r.end_time).isoformat(),
            )
        for value in recent[-max(1, self.cfg.backfill.recheck_recent) :]:
            k = codec.decode(value)
            if isinstance(k, Kline):
                self._remember(state, k)
        slots = result.candles + sum(
            count_opens(pair.interval, r.start_time, r.end_time) for r in result.empty
        )
        newest = max(positions, default=None)
        if newest is not None and (state.position is None or newest > state.position):
            state.position = newest
        if self.ledger is not None:
            # Recorded in the ledger once Kafka acknowledged the pair through `newest`.
            position = -1 if newest is None else newest
            self._unrecorded += [(pair, position, entry) for entry in result.files]
        self._progress.advance(state, slots)
        WEIGHT.set(self.rest.budget.own(self.rest.budget_now_ms()))

    def _remember(self, state: PairState, k: Kline) -> None:
        state.recent[k.open_time] = k
        state.recent.move_to_end(k.open_time)
        keep = max(1, self.cfg.backfill.recheck_recent)
        while len(state.recent) > keep:
            state.recent.popitem(last=False)

    # -- offsets ---------------------------------------------------------------------------
    async def _commit_loop(self) -> None:
        """Serve delivery reports and commit acknowledged positions; a failure stops the run
        (nothing after an undelivered record may ever be committed)."""
        try:
            while True:
                await asyncio.sleep(COMMIT_EVERY_S)
                self.publisher.poll(0)
                self.offsets.commit_acked(self.service, self.publisher)
                self._record_acked_files()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.error("publishing failed, stopping: %s", exc)
            self._fatal = exc
            self.stop.set()

    def _flush_and_commit(self) -> None:
        remaining = self.publisher.flush(60)
        if remaining:
            logger.error("%d records not acknowledged by Kafka at exit", remaining)
        self.offsets.commit_acked(self.service, self.publisher)
        self._record_acked_files()
        self.offsets.flush(30)
        if self.ledger is not None:
            self.ledger.flush(30)

    def _record_acked_files(self) -> None:
        """Archive files whose candles Kafka acknowledged go into the ledger."""
        if self.ledger is None or not self._unrecorded:
            return
        waiting: list[tuple[Pair, int, IngestedFile]] = []
        for pair, position, entry in self._unrecorded:
            acked = self.publisher.acked_through(pair)
            if position < 0 or (acked is not None and acked >= position):
                self.ledger.record(entry)
            else:
                waiting.append((pair, position, entry))
        self._unrecorded = waiting

    def _finish_summary(self) -> None:
        s = self.summary
        s.seconds = time.monotonic() - self._started
        s.requests = self.rest.stats.requests
        s.klines_requests = self.rest.stats.klines_requests
        s.retries = self.rest.stats.retries
        s.weight = self.rest.budget.stats.weight_sent
        s.rate_limited = self.rest.budget.stats.rate_limited
        s.banned = self.rest.budget.stats.banned
        if self.archive is not None:
            a = self.archive.stats
            s.archive_downloaded, s.archive_cached = a.downloaded, a.cached
            s.archive_missing, s.archive_corrupt = a.missing, a.corrupt
            s.archive_corrections = a.corrections
        s.failed_pairs = [str(st.pair) for st in self.states.values() if st.failed]
        times = self.publisher.times
        s.publish_times = {step: (times.wall[step], times.cpu[step]) for step in times.steps}
