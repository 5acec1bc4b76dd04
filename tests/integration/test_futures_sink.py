"""The sink's futures path against the real Kafka and PostgreSQL: funding records and price
klines written with their pointers, a database that refuses connections for a while (nothing
is committed, the consumer stays in its group, nothing is lost afterwards), a bad record to
the DLQ, and a replayed batch that changes nothing."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace

from qryptify import db
from qryptify.avro import AvroCodec
from qryptify.config import Config, build_config
from qryptify.dlq import DlqWriter
from qryptify.errors import DatabaseUnavailable
from qryptify.futures.funding import FundingRate
from qryptify.futures.price import PriceKline
from qryptify.futures.records import encode
from qryptify.futures.sink import FuturesSink
from qryptify.futures.topic import publish_records, topic_spec
from qryptify.kafka import TopicPartition, ensure_topics, make_consumer, make_producer
from tests.integration.conftest import unique
from tests.support.processes import wait_until

JUN = 1_717_200_000_000
H = 3_600_000


def _fundings(n: int) -> list[FundingRate]:
    return [
        FundingRate("BTCUSDT", JUN + i * 8 * H, f"0.000{i:05d}", "67000.5", None, "rest", JUN)
        for i in range(n)
    ]


def _prices(n: int) -> list[PriceKline]:
    return [
        PriceKline("mark", "BTCUSDT", "1h", JUN + i * H, JUN + (i + 1) * H - 1, "100.5",
                   "101.0", "99.0", "100.0", 3600, "rest", JUN)
        for i in range(n)
    ]  # fmt: skip


def _committed(cfg: Config, group: str) -> int:
    consumer = make_consumer(cfg.kafka, group)
    try:
        topic = cfg.futures.topic
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        parts = consumer.committed([TopicPartition(topic, p) for p in meta.partitions], timeout=10)
        return sum(max(tp.offset, 0) for tp in parts)
    finally:
        consumer.close()


def _counts(dsn: str) -> tuple[int, int, int]:
    with db.connect(dsn) as conn:
        f = conn.execute("SELECT count(*) FROM funding_rates").fetchone()
        m = conn.execute("SELECT count(*) FROM mark_price_klines").fetchone()
        s = conn.execute("SELECT count(*) FROM futures_sync_state").fetchone()
    assert f is not None and m is not None and s is not None
    return int(f[0]), int(m[0]), int(s[0])


def test_futures_path_survives_a_database_outage(app_config: Config, db_dsn: str) -> None:
    cfg = build_config(
        app_config.model_dump(mode="json", exclude={"pairs", "warnings"})
        | {"db": {"dsn": db_dsn}}
        | {"futures": {"funding_rates": True, "mark_price": True,
                       "topic": unique("test") + ".futures"}}
    )  # fmt: skip
    ensure_topics(cfg.kafka, specs=[topic_spec(cfg)])
    producer = make_producer(cfg.kafka)
    codec = AvroCodec()
    publish_records(producer, cfg.futures.topic, codec, [*_fundings(10), *_prices(24)])
    bad = replace(_fundings(1)[0], funding_rate="lots")  # encodes (a string), fails the check
    producer.produce(cfg.futures.topic, key=bad.key.encode(), value=encode(codec, bad))
    producer.flush(30)

    down = threading.Event()
    down.set()
    attempts: list[int] = []

    def connect() -> db.Connection:
        attempts.append(1)
        if down.is_set():
            raise DatabaseUnavailable("connection refused (test)")
        return db.connect(db_dsn)

    group = unique("futures-sink")
    stop = threading.Event()
    sink = FuturesSink(
        make_consumer(cfg.kafka, group),
        connect,
        cfg.futures.topic,
        stop,
        dlq=DlqWriter(make_producer(cfg.kafka), cfg.kafka.dlq_topic),
    )
    thread = threading.Thread(target=sink.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: len(attempts) >= 3, 60, "three failed connection attempts")
        assert thread.is_alive()
        assert _committed(cfg, group) == 0  # nothing written, nothing committed
        assert _counts(db_dsn) == (0, 0, 0)

        down.clear()
        done: Callable[[], bool] = lambda: _committed(cfg, group) == 35  # noqa: E731
        wait_until(done, 60, "the futures path to catch up")
        assert _counts(db_dsn) == (10, 24, 2)  # funding BTCUSDT + mark BTCUSDT/1h pointers
        with db.connect(db_dsn) as conn:
            pointers = conn.execute(
                "SELECT kind, symbol, interval, (extract(epoch FROM last_ts) * 1000)::bigint"
                " FROM futures_sync_state ORDER BY kind"
            ).fetchall()
        assert pointers == [("funding", "BTCUSDT", "", JUN + 9 * 8 * H),
                            ("mark", "BTCUSDT", "1h", JUN + 23 * H)]  # fmt: skip
        assert sink.written == 34

        # The same records again (a re-publication): committed, nothing changes.
        publish_records(producer, cfg.futures.topic, codec, [*_fundings(10), *_prices(24)])
        wait_until(lambda: _committed(cfg, group) == 69, 60, "the repeated records")
        assert sink.written == 34
        assert _counts(db_dsn) == (10, 24, 2)
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()


def _mark_rows(dsn: str) -> tuple[list[int], list[tuple[int, int]]]:
    with db.connect(dsn) as conn:
        candles = conn.execute(
            "SELECT (extract(epoch FROM ts) * 1000)::bigint FROM mark_price_klines ORDER BY 1"
        ).fetchall()
        ranges = conn.execute(
            "SELECT (extract(epoch FROM start_ts) * 1000)::bigint,"
            " (extract(epoch FROM end_ts) * 1000)::bigint FROM mark_price_empty_ranges ORDER BY 1"
        ).fetchall()
    return [int(t) for (t,) in candles], [(int(a), int(b)) for a, b in ranges]


def test_price_empty_ranges_follow_the_klines_rules(db_dsn: str) -> None:
    """write_futures with PriceEmptyRange records, on the real database: the candles stored in
    a range are deleted, the range recorded once (a repeated batch changes nothing), a candle
    written into a recorded range trims it, and the other kinds' tables are not touched."""
    from qryptify.futures.price import PriceEmptyRange
    from qryptify.futures.store import write_futures
    from qryptify.kline import EmptyRange

    gone = PriceEmptyRange("mark", EmptyRange("BTCUSDT", "1h", JUN + 2 * H, JUN + 5 * H, JUN))
    index = PriceEmptyRange("index", EmptyRange("BTCUSDT", "1h", JUN, JUN + H, JUN))
    with db.connect(db_dsn) as conn:
        write_futures(conn, [], _prices(6))
        write_futures(conn, [], [], [gone, index])
    assert _mark_rows(db_dsn) == ([JUN, JUN + H, JUN + 5 * H], [(JUN + 2 * H, JUN + 5 * H)])
    with db.connect(db_dsn) as conn:
        assert write_futures(conn, [], [], [gone, index]) == 0  # repeated: a no-op
        idx = conn.execute("SELECT count(*) FROM index_price_empty_ranges").fetchone()
        trade = conn.execute("SELECT count(*) FROM empty_ranges").fetchone()
    assert (idx, trade) == ((1,), (0,))
    assert _mark_rows(db_dsn) == ([JUN, JUN + H, JUN + 5 * H], [(JUN + 2 * H, JUN + 5 * H)])
    # The exchange publishes a candle inside the range after all: it wins, the range is trimmed.
    with db.connect(db_dsn) as conn:
        write_futures(conn, [], [_prices(6)[3]])
    assert _mark_rows(db_dsn) == (
        [JUN, JUN + H, JUN + 3 * H, JUN + 5 * H],
        [(JUN + 2 * H, JUN + 3 * H), (JUN + 4 * H, JUN + 5 * H)],
    )


def test_funding_gaps_in_status_allow_the_exchanges_millisecond_offsets(db_dsn: str) -> None:
    """Real funding times sit a few ms off the hour: 8 h and 7 ms apart is no gap, 16 h is."""
    from qryptify.futures.status import coverage
    from qryptify.futures.store import write_funding

    times = [JUN + 7, JUN + 8 * H + 3, JUN + 16 * H + 10, JUN + 32 * H + 1]
    rows = [FundingRate("BTCUSDT", t, "0.0001", None, 8, "rest", JUN) for t in times]
    with db.connect(db_dsn) as conn:
        write_funding(conn, rows)
        [funding] = coverage(conn, ["BTCUSDT"], [], [])
    assert (funding.kind, funding.series, funding.rows, funding.gaps) == (
        "funding",
        "BTCUSDT",
        4,
        1,
    )
