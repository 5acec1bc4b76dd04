"""``qryptify status``: extension, hypertables, coverage, gaps, pointers, staleness, lag, DLQ.

Gathers facts from PostgreSQL and Kafka and hands them to the pure functions of
``qryptify.health_report``. Exit status: 0 healthy, 3 a threshold breached or a component
unreachable (so it serves as a health check), 1 unexpected failure, 2 bad configuration.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import httpx

from qryptify import db, native
from qryptify.archive_ledger import read_ledger
from qryptify.binance.rest import parse_exchange_info
from qryptify.clock import SystemClock, server_offset_ms
from qryptify.config import Config, KafkaConfig
from qryptify.errors import (
    ConfigError,
    DatabaseUnavailable,
    ExchangeUnavailable,
    KafkaSetupError,
    MalformedPayload,
    OffsetStoreError,
)
from qryptify.futures import status as futures_status
from qryptify.futures.price import enabled_kinds
from qryptify.health_report import (
    DEFAULT_MAX_GAPS,
    DEFAULT_MAX_LAG,
    EXIT_UNHEALTHY,
    AuditFacts,
    DatabaseHealth,
    Hypertable,
    KafkaHealth,
    PairFacts,
    PairHealth,
    StatusReport,
    Thresholds,
    arrival_budget_ms,
    assess_pair,
    judge,
    parse_duration_ms,
    partition_lags,
    render_text,
    to_json,
    window,
)
from qryptify.kafka import (
    KafkaError,
    KafkaException,
    committed_offsets,
    high_watermarks,
    make_consumer,
)
from qryptify.pairs import Pair
from qryptify.redaction import redact_dsn, redact_message

logger = logging.getLogger(__name__)

# Times travel as ms since the epoch, converted in SQL; every statement is a constant that
# takes parameters only.
_SUMMARY = """
SELECT (extract(epoch FROM min(ts)) * 1000)::bigint,
       (extract(epoch FROM max(ts)) * 1000)::bigint,
       count(*)
FROM candlesticks WHERE symbol = %(symbol)s AND interval = %(interval)s
"""
_IN_WINDOW = """
SELECT (extract(epoch FROM min(ts)) * 1000)::bigint, count(*)
FROM candlesticks
WHERE symbol = %(symbol)s AND interval = %(interval)s
  AND ts >= TIMESTAMPTZ 'epoch' + %(start)s * INTERVAL '1 millisecond'
  AND ts < TIMESTAMPTZ 'epoch' + %(end)s * INTERVAL '1 millisecond'
"""
SCHEMA_TABLES = ("candlesticks", "sync_state", "empty_ranges")
_SCHEMA_CHECK = """
SELECT name, to_regclass(name) FROM unnest(%(tables)s::text[]) AS t(name)
"""
_HYPERTABLES = """
SELECT h.hypertable_schema, h.hypertable_name, h.num_chunks, h.compression_enabled,
       coalesce(d.time_interval::text, d.integer_interval::text, '?'),
       (SELECT count(*) FROM timescaledb_information.chunks AS c
         WHERE c.hypertable_schema = h.hypertable_schema
           AND c.hypertable_name = h.hypertable_name AND c.is_compressed),
       (SELECT j.config ->> 'compress_after' FROM timescaledb_information.jobs AS j
         WHERE j.hypertable_schema = h.hypertable_schema
           AND j.hypertable_name = h.hypertable_name AND j.proc_name = 'policy_compression'
         LIMIT 1)
FROM timescaledb_information.hypertables AS h
LEFT JOIN timescaledb_information.dimensions AS d
       ON d.hypertable_schema = h.hypertable_schema
      AND d.hypertable_name = h.hypertable_name AND d.dimension_number = 1
ORDER BY h.hypertable_schema, h.hypertable_name
"""
_COMPRESSION_SETTINGS = """
SELECT string_agg(attname, ', ' ORDER BY segmentby_column_index)
         FILTER (WHERE segmentby_column_index IS NOT NULL) AS segment_by,
       string_agg(attname || CASE WHEN orderby_asc THEN '' ELSE ' DESC' END, ', '
                  ORDER BY orderby_column_index)
         FILTER (WHERE orderby_column_index IS NOT NULL) AS order_by
FROM timescaledb_information.compression_settings
WHERE hypertable_schema = %s AND hypertable_name = %s
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "status",
        help="pipeline health: coverage, gaps, pointers, staleness, consumer lag, DLQ",
        description="Report the pipeline's health. Exit 0 healthy, 3 when a threshold is "
        "breached or PostgreSQL/Kafka is unreachable, 1 on unexpected failure, 2 bad config.",
    )
    parser.add_argument("--dsn", default=None, help="database (default: db.dsn)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--max-gaps",
        type=int,
        default=DEFAULT_MAX_GAPS,
        metavar="N",
        help="gaps allowed per pair (default %(default)s)",
    )
    parser.add_argument(
        "--max-stale",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="age allowed for the newest candle's close, e.g. 90s, 15m, 2h "
        "(default: 2 intervals + 60s per pair)",
    )
    parser.add_argument(
        "--max-lag",
        type=int,
        default=DEFAULT_MAX_LAG,
        metavar="N",
        help="records the sink group may be behind, summed over partitions (default %(default)s)",
    )
    parser.add_argument(
        "--max-dlq",
        type=int,
        default=None,
        metavar="N",
        help="records allowed in the DLQ topic (default: reported, not checked)",
    )
    now = parser.add_mutually_exclusive_group()
    now.add_argument(
        "--exchange-time-from",
        metavar="URL",
        default=None,
        help="read 'now' from URL/fapi/v1/time ('rest' = rest.endpoint, the default; "
        "'local' = this machine's clock). An unreachable exchange falls back to the local clock",
    )
    now.add_argument(
        "--now",
        metavar="TIME",
        type=_parse_time,
        default=None,
        help="evaluate as of this time (ms since epoch or ISO-8601 UTC), for reproducible checks",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="per Kafka/HTTP request (default %(default)s)",
    )
    parser.set_defaults(run=run)


def _duration(text: str) -> int:
    try:
        return parse_duration_ms(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(args: argparse.Namespace, cfg: Config) -> int:
    if not cfg.pairs:
        # An empty report would read as HEALTHY while nothing is being ingested.
        raise ConfigError(
            "pairs", [], "no pairs configured: give --config PATH (or $QRYPTIFY_CONFIG)"
        )
    dsn: str = args.dsn or cfg.db.dsn.get_secret_value()
    now_ms, clock = _resolve_now(args, cfg)
    thresholds = Thresholds(
        max_gaps=args.max_gaps,
        max_stale_ms=args.max_stale,
        max_lag=args.max_lag,
        max_dlq=args.max_dlq,
        arrival_budget_ms=arrival_budget_ms(
            cfg.ws.watchdog_grace_ms, cfg.ws.watchdog_retry_ms, cfg.sink.max_latency_ms
        ),
    )
    database, pairs = collect_database(dsn, cfg.pairs, cfg.backfill.start_ms, now_ms, thresholds)
    kafka = collect_kafka(cfg.kafka, cfg.sink.group_id, args.timeout)
    unlisted: tuple[Pair, ...] = ()
    if clock.startswith("http"):  # the exchange answered: ask it which symbols it lists
        listed = fetch_listed_symbols(clock, min(args.timeout, 10.0))
        if listed is not None:
            unlisted = tuple(p for p in cfg.pairs if p.symbol not in listed)
    report = StatusReport(
        now_ms=now_ms,
        clock=clock,
        backfill_start_ms=cfg.backfill.start_ms,
        database=database,
        pairs=tuple(pairs),
        kafka=kafka,
        thresholds=thresholds,
        core=native.CORE,
        unlisted=unlisted,
    )
    futures = _futures(cfg, dsn)
    found = judge(report) + futures_status.breaches(futures or [], args.max_gaps)
    report = dataclasses.replace(report, breaches=tuple(found))
    if args.json:
        body = to_json(report)
        if futures is not None:
            body["futures"] = futures_status.to_json(futures)
        print(json.dumps(body, indent=2))
    else:
        print(render_text(report))
        if futures is not None:
            print(futures_status.render(futures))
    return 0 if report.healthy else EXIT_UNHEALTHY


def _futures(cfg: Config, dsn: str) -> list[futures_status.Coverage] | None:
    """Coverage per series of every futures kind that is on (None when all are off)."""
    kinds = enabled_kinds(cfg)
    if not cfg.futures.funding_rates and not kinds:
        return None
    symbols = [p.symbol for p in cfg.pairs] if cfg.futures.funding_rates else []
    try:
        with db.connect(dsn, autocommit=True) as conn:
            return futures_status.coverage(conn, symbols, kinds, cfg.pairs)
    except Exception as exc:  # reported by the main section already if the DB is down
        logger.debug("futures coverage failed: %s", exc)
        return []


def _resolve_now(args: argparse.Namespace, cfg: Config) -> tuple[int, str]:
    if args.now is not None:
        return int(args.now), "--now"
    choice = args.exchange_time_from or "rest"
    if choice == "local":
        return SystemClock().now_ms(), "local clock"
    base = cfg.rest.endpoint if choice == "rest" else choice
    try:
        return fetch_exchange_time(base, min(args.timeout, 5.0)), base
    except ExchangeUnavailable as exc:
        if args.exchange_time_from is not None:
            raise
        # "Now" should be the exchange's (invariant 5); without it the local clock is the
        # best estimate, and the report says which one it used.
        return SystemClock().now_ms(), f"local clock (exchange time unavailable: {exc.reason})"


def _parse_time(text: str) -> int:
    if text.strip().isdigit():
        return int(text)
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither ms nor ISO-8601") from None
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r}: give a UTC offset, e.g. Z")
    return int(parsed.timestamp() * 1000)


def fetch_exchange_time(base_url: str, timeout_s: float) -> int:
    """The exchange's clock from ``/fapi/v1/time``, corrected to mid-request."""
    url = base_url.rstrip("/")
    if not url.endswith("/fapi/v1/time"):
        url += "/fapi/v1/time"
    local = SystemClock()
    sent = local.now_ms()
    try:
        response = httpx.get(url, timeout=timeout_s)
        response.raise_for_status()
        server = int(response.json()["serverTime"])
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        raise ExchangeUnavailable(f"{url}: {exc}") from None
    received = local.now_ms()
    return received + server_offset_ms(sent, received, server)


def fetch_listed_symbols(base_url: str, timeout_s: float) -> frozenset[str] | None:
    """The symbols ``/fapi/v1/exchangeInfo`` lists; None when it cannot be read (then the
    report says nothing about listings rather than guessing)."""
    url = base_url.rstrip("/").removesuffix("/fapi/v1/time") + "/fapi/v1/exchangeInfo"
    try:
        response = httpx.get(url, timeout=timeout_s)
        response.raise_for_status()
        return frozenset(parse_exchange_info(response.json()).symbols)
    except (httpx.HTTPError, ValueError, MalformedPayload) as exc:
        logger.warning("exchangeInfo unavailable (%s): listings not checked", exc)
        return None


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------


def collect_database(
    dsn: str,
    pairs: Sequence[Pair],
    backfill_start_ms: int,
    now_ms: int,
    thresholds: Thresholds,
) -> tuple[DatabaseHealth, list[PairHealth]]:
    target = redact_dsn(dsn)
    try:
        conn = db.connect(dsn, autocommit=True)
    except DatabaseUnavailable as exc:
        return DatabaseHealth(target=target, error=" ".join(exc.reason.split())), []
    with conn:
        try:
            return _read_database(conn, target, pairs, backfill_start_ms, now_ms, thresholds)
        except Exception as exc:  # a health check reports what failed; it never crashes
            logger.debug("reading the database failed", exc_info=True)
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            reason = redact_message(f"{type(exc).__name__}: {first_line}", dsn)
            return DatabaseHealth(target=target, error=reason), []


def _read_database(
    conn: db.Connection,
    target: str,
    pairs: Sequence[Pair],
    backfill_start_ms: int,
    now_ms: int,
    thresholds: Thresholds,
) -> tuple[DatabaseHealth, list[PairHealth]]:
    row = conn.execute("SELECT version()").fetchone()
    server_version = None if row is None else str(row[0])
    missing = [
        str(name)
        for (name, found) in conn.execute(_SCHEMA_CHECK, {"tables": list(SCHEMA_TABLES)})
        if found is None
    ]
    if missing:
        reason = f"schema not migrated (missing {', '.join(missing)}): run `qryptify migrate`"
        return DatabaseHealth(target=target, error=reason, server_version=server_version), []
    version = db.timescale_version(conn)
    hypertables: list[Hypertable] = []
    ts_error: str | None = None
    if version is not None:
        try:
            hypertables = read_hypertables(conn)
        except Exception as exc:  # the information views differ between TimescaleDB versions
            logger.debug("reading timescaledb_information failed", exc_info=True)
            ts_error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
    health = DatabaseHealth(
        target=target,
        server_version=server_version,
        timescale_version=version,
        hypertables=tuple(hypertables),
        timescale_error=ts_error,
    )
    assessed = [
        assess_pair(
            read_pair(conn, p, backfill_start_ms, now_ms),
            backfill_start_ms,
            now_ms,
            thresholds.max_stale_ms,
            thresholds.arrival_budget_ms,
        )
        for p in pairs
    ]
    return health, assessed


def read_hypertables(conn: db.Connection) -> list[Hypertable]:
    found: list[Hypertable] = []
    for schema, name, chunks, compression, chunk_interval, compressed, after in conn.execute(
        _HYPERTABLES
    ).fetchall():
        segment_by, order_by = None, None
        if compression:
            settings = conn.execute(_COMPRESSION_SETTINGS, (schema, name)).fetchone()
            if settings is not None:
                segment_by, order_by = settings
        found.append(
            Hypertable(
                name=f"{schema}.{name}",
                chunk_interval=str(chunk_interval),
                num_chunks=int(chunks or 0),
                compression_enabled=bool(compression),
                compressed_chunks=int(compressed or 0),
                compress_after=None if after is None else str(after),
                segment_by=segment_by or "",
                order_by=order_by or "",
            )
        )
    return found


def read_pair(conn: db.Connection, pair: Pair, backfill_start_ms: int, now_ms: int) -> PairFacts:
    """The pair's facts from ONE snapshot: a sink committing between two of these queries
    would otherwise show ``sync_state`` ahead of the newest candle it has just written."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        return _read_pair(conn, pair, backfill_start_ms, now_ms)


def _read_pair(conn: db.Connection, pair: Pair, backfill_start_ms: int, now_ms: int) -> PairFacts:
    params: dict[str, object] = {"symbol": pair.symbol, "interval": pair.interval}
    summary = conn.execute(_SUMMARY, params).fetchone()
    first, last, total = summary if summary is not None else (None, None, 0)
    first_ms = None if first is None else int(first)
    start, end = window(pair.interval, backfill_start_ms, first_ms, now_ms)
    params["start"], params["end"] = start, end
    inside = conn.execute(_IN_WINDOW, params).fetchone()
    first_inside, rows_inside = inside if inside is not None else (None, 0)
    found = db.candle_jumps(conn, pair.symbol, pair.interval, start, end)
    empty = db.empty_ranges_within(conn, pair.symbol, pair.interval, start, end)
    pointer_ms = db.sync_pointer(conn, pair.symbol, pair.interval)
    return PairFacts(
        pair=pair,
        first_ms=first_ms,
        last_ms=None if last is None else int(last),
        rows_total=int(total),
        rows_in_window=int(rows_inside),
        first_in_window_ms=None if first_inside is None else int(first_inside),
        jumps=tuple(found),
        empty_ranges=tuple(empty),
        pointer_ms=pointer_ms,
    )


# --------------------------------------------------------------------------------------------
# Kafka
# --------------------------------------------------------------------------------------------


_LIBRDKAFKA_LOGGER = logging.getLogger("qryptify.status.librdkafka")


def _quiet_client_error(err: Any) -> None:
    # Unreachable brokers are reported in the table; librdkafka's retries are noise here.
    logger.debug("kafka: %s", err)


def collect_kafka(cfg: KafkaConfig, group: str, timeout_s: float) -> KafkaHealth:
    """Committed offsets of ``group`` against the high watermarks, and the DLQ size.

    Reading committed offsets does not join the group: nothing is assigned or rebalanced.
    """
    base = KafkaHealth(
        bootstrap=cfg.bootstrap_servers, topic=cfg.topic, group=group, dlq_topic=cfg.dlq_topic
    )
    try:
        # librdkafka's own log lines go to Python logging (scrubbed) instead of straight to
        # stderr, shown only at DEBUG: the failure itself is reported in the table.
        debug = logging.getLogger().isEnabledFor(logging.DEBUG)
        _LIBRDKAFKA_LOGGER.setLevel(logging.DEBUG if debug else logging.CRITICAL)
        consumer = make_consumer(
            cfg, group, error_cb=_quiet_client_error, logger=_LIBRDKAFKA_LOGGER
        )
    except KafkaException as exc:
        return dataclasses.replace(base, error=_kafka_reason(exc))
    try:
        highs = high_watermarks(consumer, cfg.topic, timeout_s)
        committed = committed_offsets(consumer, cfg.topic, highs, timeout_s)
        lags = partition_lags(highs, committed)
        dlq: int | None = None
        dlq_error: str | None = None
        try:
            dlq = sum(high_watermarks(consumer, cfg.dlq_topic, timeout_s).values())
        except (KafkaException, KafkaSetupError) as exc:
            dlq_error = _kafka_reason(exc)
        audit, audit_error = collect_audit(cfg, timeout_s)
        return dataclasses.replace(
            base,
            partitions=tuple(lags),
            dlq_records=dlq,
            dlq_error=dlq_error,
            audit=audit,
            audit_error=audit_error,
        )
    except (KafkaException, KafkaSetupError) as exc:
        return dataclasses.replace(base, error=_kafka_reason(exc))
    finally:
        consumer.close()


def collect_audit(cfg: KafkaConfig, timeout_s: float) -> tuple[AuditFacts | None, str | None]:
    """The archive audit's record and the ledger's size, from ``kafka.offsets_topic``."""
    try:
        files, last = read_ledger(cfg, timeout_s=timeout_s)
    except (KafkaException, KafkaSetupError, OffsetStoreError) as exc:
        return None, _kafka_reason(exc)
    if last is None:
        return AuditFacts(ledger_files=len(files)), None
    return AuditFacts(len(files), **dataclasses.asdict(last)), None


def _kafka_reason(exc: BaseException) -> str:
    err = exc.args[0] if exc.args else None
    if isinstance(err, KafkaError):
        return f"{err.name()}: {err.str()}"
    return str(exc)
