"""The original config (no ``futures`` section) behaves exactly as before: the same klines
topic records and the same candlesticks / sync_state / empty_ranges rows as a run with funding
rates on, no futures topic created, and the futures tables left empty."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from qryptify import db
from qryptify.config import KafkaConfig
from qryptify.kafka import ensure_topics, make_consumer
from qryptify.kline import Event, Kline
from sim.server import SimulatorThread
from sim.symbols import parse_time_ms
from tests.e2e.backfill_support import FROZEN, SIM_NOW, BackfillEnv, read_topic
from tests.e2e.futures_support import backfiller, futures_env, group_caught_up
from tests.integration.conftest import fresh_database, unique
from tests.support.processes import wait_until

pytestmark = pytest.mark.e2e

PAIRS = ("BTCUSDT/1h", "ETHUSDT/4h", "BNBUSDT/1d")
EMPTY = {
    "symbol": "ETHUSDT",
    "start": parse_time_ms("2024-05-20T00:00:00Z"),
    "end": parse_time_ms("2024-05-20T12:00:00Z"),
}
TABLES = {
    "candlesticks": "SELECT * FROM candlesticks ORDER BY symbol, interval, ts",
    "sync_state": "SELECT symbol, interval, last_closed_ts FROM sync_state ORDER BY 1, 2",
    "empty_ranges": "SELECT symbol, interval, start_ts, end_ts FROM empty_ranges ORDER BY 1, 2, 3",
}


@pytest.fixture
def sim(simulator: Callable[..., SimulatorThread]) -> SimulatorThread:
    return simulator(start_ms=SIM_NOW, speed=FROZEN, faults={"empty_ranges": [EMPTY]})


@pytest.fixture
def second_db(pg_admin_dsn: str) -> Iterator[str]:
    with fresh_database(pg_admin_dsn) as dsn:
        yield dsn


def _run(env: BackfillEnv, futures_topic: str | None) -> None:
    env.start("services.sink")
    assert backfiller(env).run() == 0
    wait_until(env.sink_caught_up, 120, "the sink to write the klines")
    if futures_topic is not None:
        group = f"{env.sink_group}.futures"
        wait_until(lambda: group_caught_up(env.kafka, futures_topic, group), 120, "futures")


def _by_key(events: list[tuple[int, int, Event]]) -> dict[str, list[Event]]:
    """Per record key, the events in topic order, without the ingest time (which differs)."""
    out: dict[str, list[Event]] = defaultdict(list)
    for _, _, e in events:
        if isinstance(e, Kline):
            e = dataclasses.replace(e, ingested_at=0)
        out[f"{e.symbol}|{e.interval}"].append(e)
    return dict(out)


def _tables(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    with db.connect(dsn) as conn:
        return {name: conn.execute(query).fetchall() for name, query in TABLES.items()}


def _topics(kafka: KafkaConfig) -> set[str]:
    consumer = make_consumer(kafka, unique("meta"))
    try:
        return set(consumer.list_topics(timeout=10).topics)
    finally:
        consumer.close()


def test_no_futures_section_changes_nothing(
    sim: SimulatorThread,
    kafka_cfg: KafkaConfig,
    db_dsn: str,
    second_db: str,
    tmp_path: Path,
) -> None:
    # The original config: no futures section at all.
    plain = BackfillEnv(sim, kafka_cfg, db_dsn, tmp_path / "plain", PAIRS, start_date="2024-04-01")
    (tmp_path / "plain").mkdir()
    assert "futures" not in plain.doc()
    before = _topics(kafka_cfg)
    try:
        _run(plain, None)
    finally:
        plain.cleanup()
    assert _topics(kafka_cfg) == before  # no futures topic, nothing else created

    # The same exchange with funding rates on, on its own topics and database.
    base = unique("test")
    kafka_on = kafka_cfg.model_copy(
        update={"topic": f"{base}.klines", "offsets_topic": f"{base}.offsets",
                "dlq_topic": f"{base}.dlq"}
    )  # fmt: skip
    ensure_topics(kafka_on)
    (tmp_path / "on").mkdir()
    on = BackfillEnv(sim, kafka_on, second_db, tmp_path / "on", PAIRS, start_date="2024-04-01")
    topic = futures_env(on, prices=True)
    try:
        _run(on, topic)
    finally:
        on.cleanup()

    plain_events = _by_key(read_topic(kafka_cfg))
    on_events = _by_key(read_topic(kafka_on))
    assert sorted(plain_events) == ["BNBUSDT|1d", "BTCUSDT|1h", "ETHUSDT|4h"]
    assert sum(len(v) for v in plain_events.values()) > 3000
    assert plain_events == on_events

    plain_tables = _tables(db_dsn)
    assert plain_tables["empty_ranges"]  # the maintenance window was recorded
    assert plain_tables == _tables(second_db)
    with db.connect(db_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM funding_rates").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM futures_sync_state").fetchone() == (0,)
    with db.connect(second_db) as conn:
        funded = conn.execute("SELECT count(*) FROM funding_rates").fetchone()
    assert funded is not None and funded[0] > 0
