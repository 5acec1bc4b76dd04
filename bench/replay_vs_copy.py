"""Replay throughput against raw COPY, measured in the same run on this machine.

    .venv/bin/python bench/replay_vs_copy.py [--rows 300000] [--profile]

On the real stack (defaults: the test stack, Kafka 127.0.0.1:19092, PostgreSQL :15432):
produces N klines into a fresh topic, then measures
  (a) raw COPY of the same rows into an empty ``candlesticks`` table (with its primary key),
  (b) ``qryptify replay`` into an empty database,
  (c) ``qryptify replay`` into the already full database (the no-op path),
and drops what it created. ``--profile`` writes a pyinstrument profile of (b).
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench.harness import database
from qryptify import db
from qryptify.avro import KlineCodec
from qryptify.commands.replay import ReplayResult, replay
from qryptify.config import Config, KafkaConfig, build_config
from qryptify.kafka import ensure_topics, make_producer, produce_waiting
from qryptify.kline import Kline
from qryptify.pairs import close_time

T0 = 1_577_836_800_000  # 2020-01-01


def klines(rows: int, pairs: int) -> list[Kline]:
    per_pair = rows // pairs
    out: list[Kline] = []
    for p in range(pairs):
        symbol = f"BENCH{p:03d}USDT"
        for i in range(per_pair):
            t = T0 + i * 60_000
            base = 1000 + (i * 7 + p) % 500
            out.append(
                Kline(
                    symbol,
                    "1m",
                    t,
                    close_time("1m", t),
                    f"{base}.12",
                    f"{base + 3}.5",
                    f"{base - 2}.25",
                    f"{base + 1}.75",
                    f"{i % 97}.123",
                    f"{i * 13}.5",
                    i % 1000,
                    "1.5",
                    "1500.25",
                    "archive",
                    t + 90_000,
                )  # fmt: skip
            )
    return out


def produce(kafka: KafkaConfig, items: list[Kline]) -> float:
    codec = KlineCodec()
    producer = make_producer(kafka, **{"linger.ms": 50})
    started = time.perf_counter()
    for k in items:
        produce_waiting(producer, kafka.topic, key=k.key.encode(), value=codec.encode(k))
    assert producer.flush(120) == 0
    return time.perf_counter() - started


def _ts(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(sep=" ")


def raw_copy(dsn: str, items: list[Kline]) -> float:
    """Seconds a raw COPY (text) of ``items`` into the empty table at ``dsn`` takes."""
    text = "".join(
        f"{_ts(k.open_time)}\t{k.symbol}\t{k.interval}\t{k.open}\t{k.high}\t{k.low}\t{k.close}\t"
        f"{k.volume}\t{_ts(k.close_time)}\t{k.quote_volume}\t{k.trades}\t{k.taker_buy_base}\t"
        f"{k.taker_buy_quote}\n"
        for k in items
    ).encode()
    return copy_text(dsn, [text], len(items))


def copy_text(dsn: str, chunks: Sequence[bytes], rows: int) -> float:
    """Seconds ``COPY candlesticks FROM STDIN`` of ``chunks`` (COPY text, already in memory)
    takes, commit included; checks that the table then holds ``rows`` rows."""
    with db.connect(dsn) as conn:
        started = time.perf_counter()
        with (
            conn.cursor() as cur,
            cur.copy(f"COPY candlesticks ({', '.join(db.CANDLE_COLUMNS)}) FROM STDIN") as copy,
        ):
            for chunk in chunks:
                copy.write(chunk)
        conn.commit()
        elapsed = time.perf_counter() - started
        row = conn.execute("SELECT count(*) FROM candlesticks").fetchone()
    assert row is not None and row[0] == rows, (row, rows)
    return elapsed


#: 2000-01-01, PostgreSQL's epoch, in Unix milliseconds (binary timestamps count from it).
_PG_EPOCH_MS = 946_684_800_000


def _binary_rows(items: list[Kline]) -> bytes:
    """The same rows in PostgreSQL's binary COPY format (header and trailer included),
    formatted here with ``struct`` (not the sink's code)."""
    head = struct.Struct("!hiq")
    tail = struct.Struct("!ididididid" + "iq" + "id" + "iq" + "idid")
    parts = [db.BINARY_HEADER]
    for k in items:
        symbol, interval = k.symbol.encode(), k.interval.encode()
        parts.append(
            head.pack(13, 8, (k.open_time - _PG_EPOCH_MS) * 1000)
            + struct.pack("!i", len(symbol)) + symbol
            + struct.pack("!i", len(interval)) + interval
            + tail.pack(8, float(k.open), 8, float(k.high), 8, float(k.low), 8, float(k.close),
                        8, float(k.volume), 8, (k.close_time - _PG_EPOCH_MS) * 1000,
                        8, float(k.quote_volume), 8, k.trades, 8, float(k.taker_buy_base),
                        8, float(k.taker_buy_quote))
        )  # fmt: skip
    parts.append(db.BINARY_TRAILER)
    return b"".join(parts)


def raw_copy_binary(dsn: str, items: list[Kline]) -> float:
    """Raw binary COPY of the same rows (the reference beside text COPY: the sink sends binary
    rows when the compiled core is built)."""
    data = _binary_rows(items)
    with db.connect(dsn) as conn:
        started = time.perf_counter()
        with (
            conn.cursor() as cur,
            cur.copy(
                f"COPY candlesticks ({', '.join(db.CANDLE_COLUMNS)}) FROM STDIN (FORMAT binary)"
            ) as copy,
        ):
            copy.write(data)
        conn.commit()
        elapsed = time.perf_counter() - started
        row = conn.execute("SELECT count(*) FROM candlesticks").fetchone()
    assert row is not None and row[0] == len(items), row
    return elapsed


def copy_floor_s(admin_dsn: str, source_dsn: str, workdir: Path) -> float:
    """The floor of a pipeline that wrote the table at ``source_dsn``: seconds a raw COPY of
    exactly its rows (exported as COPY text, read into memory before the clock starts) takes
    into an empty table of a fresh database."""
    path = workdir / "floor.copy"
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = ", ".join(db.CANDLE_COLUMNS)
    with db.connect(source_dsn) as conn, path.open("wb") as out:
        with conn.cursor() as cur, cur.copy(f"COPY candlesticks ({columns}) TO STDOUT") as copy:
            for data in copy:
                out.write(data)
        row = conn.execute("SELECT count(*) FROM candlesticks").fetchone()
    rows = 0 if row is None else int(row[0])
    try:
        with path.open("rb") as handle:
            chunks = list(iter(lambda: handle.read(8 << 20), b""))
        with database(admin_dsn, f"bench_floor_{uuid.uuid4().hex[:8]}") as dsn:
            return copy_text(dsn, chunks, rows)
    finally:
        path.unlink(missing_ok=True)


def stack_arguments(parser: argparse.ArgumentParser) -> None:
    """``--kafka`` and ``--pg`` of a standalone bench script: the running test stack's."""
    parser.add_argument(
        "--kafka", default=os.environ.get("QRYPTIFY_TEST_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
    )
    parser.add_argument(
        "--pg",
        default=os.environ.get(
            "QRYPTIFY_TEST_PG_DSN", "postgresql://postgres:postgres@127.0.0.1:15432/postgres"
        ),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--partitions", type=int, default=6)
    stack_arguments(parser)
    parser.add_argument("--profile", metavar="HTML", nargs="?", const="bench/replay-profile.html")
    args = parser.parse_args()

    run_id = uuid.uuid4().hex[:8]
    kafka = KafkaConfig(bootstrap_servers=args.kafka, topic=f"bench-{run_id}.klines",
                        offsets_topic=f"bench-{run_id}.offsets", dlq_topic=f"bench-{run_id}.dlq",
                        partitions=args.partitions)  # fmt: skip
    ensure_topics(kafka)
    items = klines(args.rows, args.pairs)
    produce_s = produce(kafka, items)
    print(f"produced {len(items)} klines in {produce_s:.1f}s ({len(items) / produce_s:,.0f}/s)")

    base = args.pg.rsplit("/", 1)[0]
    names = {k: f"bench_{k}_{run_id}" for k in ("copy", "replay")}
    for name in names.values():
        db.create_database(args.pg, name)
    try:
        copy_dsn, replay_dsn = (f"{base}/{names[k]}" for k in ("copy", "replay"))
        with db.connect(copy_dsn) as conn:
            db.migrate(conn)
            version = db.timescale_version(conn)
        cfg: Config = build_config(
            {"kafka": kafka.model_dump(mode="json"), "db": {"dsn": replay_dsn}}
        )
        copy_s = raw_copy(copy_dsn, items)
        with db.connect(copy_dsn) as conn:
            conn.execute("TRUNCATE candlesticks")
            conn.commit()
        binary_s = raw_copy_binary(copy_dsn, items)

        profiler = None
        if args.profile:
            from pyinstrument import Profiler

            profiler = Profiler()
            profiler.start()
        fresh = replay(cfg, replay_dsn, progress=False)
        if profiler is not None:
            profiler.stop()
            Path(args.profile).write_text(profiler.output_html())
            print(profiler.output_text(unicode=False, color=False, show_all=False)[:6000])
        again = replay(cfg, replay_dsn, progress=False)
        assert fresh.totals["written"] == len(items), fresh.totals
        assert again.totals["written"] == 0, again.totals

        def rate(r: ReplayResult) -> str:
            return (f"{r.rows / r.elapsed_s:>9,.0f} rows/s ({r.elapsed_s:.1f}s incl. group join; "
                    f"{r.rows / r.steady_s:,.0f} rows/s from the first commit)")  # fmt: skip

        print(f"table: {'TimescaleDB ' + version if version else 'plain PostgreSQL'}, "
              f"{len(items)} rows, {args.pairs} pairs, {args.partitions} partitions")  # fmt: skip
        copy_rate = len(items) / copy_s
        print(f"(a) raw COPY into empty table      {copy_rate:>9,.0f} rows/s ({copy_s:.1f}s)")
        binary_rate = len(items) / binary_s
        print(f"    raw binary COPY                {binary_rate:>9,.0f} rows/s ({binary_s:.1f}s)")
        print(f"(b) replay into empty database     {rate(fresh)}")
        print(f"(c) replay into full database      {rate(again)}")
        print(f"    (b) / (a): {fresh.rows / fresh.elapsed_s / copy_rate:.2f}; (b) / binary COPY: "
              f"{fresh.rows / fresh.elapsed_s / binary_rate:.2f}")  # fmt: skip
    finally:
        for name in names.values():
            db.drop_database(args.pg, name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
