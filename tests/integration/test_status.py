"""``qryptify status`` as a real process against the real PostgreSQL and Kafka from stack/."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from qryptify import db, native
from qryptify.config import KafkaConfig
from qryptify.kafka import TopicPartition, make_consumer, make_producer
from qryptify.kline import EmptyRange, Kline
from qryptify.pairs import DAY_MS, HOUR_MS, MINUTE_MS
from tests.conftest import T0, make_kline
from tests.integration.conftest import unique

M = MINUTE_MS
NOW = T0 + 6 * HOUR_MS + 30_000  # 2024-01-01 06:00:30Z: 360 one-minute candles are closed
EXIT_UNHEALTHY = 3

StatusRun = Callable[..., tuple[int, str, str]]


def minute_candles(skip: Sequence[int] = (), count: int = 360) -> list[Kline]:
    return [make_kline("BTCUSDT", "1m", T0 + i * M) for i in range(count) if i not in skip]


def hour_candles(count: int = 6) -> list[Kline]:
    return [make_kline("ETHUSDT", "1h", T0 + i * HOUR_MS) for i in range(count)]


def write(dsn: str, klines: Sequence[Kline], empty: Sequence[EmptyRange] = ()) -> None:
    with db.connect(dsn) as conn:
        db.write_batch(conn, klines, empty)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def child_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("QRYPTIFY_")}


@pytest.fixture
def config_for(tmp_path: Path, db_dsn: str, kafka_cfg: KafkaConfig) -> Callable[..., Path]:
    group = unique("sink")

    def build(
        pairs: Sequence[str] = ("BTCUSDT/1m", "ETHUSDT/1h"),
        dsn: str | None = None,
        kafka: dict[str, Any] | None = None,
    ) -> Path:
        doc = {
            "pairs": list(pairs),
            "db": {"dsn": dsn or db_dsn},
            "kafka": kafka or kafka_cfg.model_dump(mode="json"),
            "sink": {"group_id": group},
            "backfill": {"start_date": "2024-01-01"},
            "metrics": {"port": 0},
        }
        path = tmp_path / f"config-{unique('c')}.yaml"
        path.write_text(yaml.safe_dump(doc))
        return path

    return build


@pytest.fixture
def status() -> StatusRun:
    def run(config: Path, *args: str) -> tuple[int, str, str]:
        proc = subprocess.run(
            [sys.executable, "-m", "qryptify", "--config", str(config), "status", *args],
            capture_output=True,
            text=True,
            env=child_env(),
            timeout=120,
            check=False,
        )
        return proc.returncode, proc.stdout, proc.stderr

    return run


def status_json(status: StatusRun, config: Path, *args: str) -> tuple[int, dict[str, Any]]:
    code, out, err = status(config, "--json", *args)
    assert "Traceback" not in err, err
    doc: dict[str, Any] = json.loads(out)
    return code, doc


def checks(doc: dict[str, Any]) -> list[str]:
    return [b["check"] for b in doc["breaches"]]


def by_pair(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["pair"]: p for p in doc["pairs"]}


def test_complete_data_is_healthy(
    db_dsn: str, config_for: Callable[..., Path], status: StatusRun
) -> None:
    write(db_dsn, minute_candles() + hour_candles())
    code, doc = status_json(status, config_for(), "--now", str(NOW))
    assert code == 0, doc["breaches"]
    assert doc["healthy"] is True
    btc, eth = by_pair(doc)["BTCUSDT/1m"], by_pair(doc)["ETHUSDT/1h"]
    assert (btc["expected"], btc["present"], btc["coverage"]) == (360, 360, 1.0)
    assert (eth["expected"], eth["present"], eth["coverage"]) == (6, 6, 1.0)
    assert btc["gaps"] == [] and btc["behind"] == 0 and btc["pointer"] == "ok"
    assert btc["stale_ms"] == 30_000
    assert doc["database"]["timescaledb"] is None or doc["database"]["hypertables"]
    assert doc["kafka"]["error"] is None
    assert doc["kafka"]["total_lag"] == 0
    assert doc["kafka"]["dlq_records"] == 0
    assert doc["core"] == native.CORE  # the same environment: the same core

    code, text, _ = status(config_for(), "--now", str(NOW))
    assert code == 0
    assert f"core      {native.CORE}" in text
    assert "BTCUSDT/1m" in text and "100.00%" in text
    assert text.rstrip().endswith("HEALTHY")


def test_gaps_are_found_net_of_exchange_empty_ranges(
    db_dsn: str, config_for: Callable[..., Path], status: StatusRun
) -> None:
    confirmed = EmptyRange("BTCUSDT", "1m", T0 + 300 * M, T0 + 302 * M, NOW)
    write(db_dsn, minute_candles(skip=(100, 101, 102, 200, 300, 301)) + hour_candles(), [confirmed])
    config = config_for()
    code, doc = status_json(status, config, "--now", str(NOW))
    assert code == EXIT_UNHEALTHY
    assert checks(doc) == ["gaps"]
    btc = by_pair(doc)["BTCUSDT/1m"]
    assert btc["gaps"] == [
        {"start_ms": T0 + 100 * M, "end_ms": T0 + 103 * M, "missing": 3},
        {"start_ms": T0 + 200 * M, "end_ms": T0 + 201 * M, "missing": 1},
    ]
    assert btc["expected"] == 358  # the two confirmed-empty minutes are not expected
    assert btc["present"] == 354
    assert btc["coverage"] == pytest.approx(354 / 358)

    code, text, _ = status(config, "--now", str(NOW))
    assert code == EXIT_UNHEALTHY
    assert "2024-01-01 01:40 .. 2024-01-01 01:42  (3 candles)" in text
    assert "gaps     BTCUSDT/1m: 2 gaps (4 candles) > --max-gaps 0" in text

    code, doc = status_json(status, config, "--now", str(NOW), "--max-gaps", "2")
    assert code == 0, doc["breaches"]


def test_staleness_and_the_tail_still_to_arrive(
    db_dsn: str, config_for: Callable[..., Path], status: StatusRun
) -> None:
    write(db_dsn, minute_candles() + hour_candles())
    later = NOW + 2 * HOUR_MS + M  # 06:00 + 2 h 1 min 30 s: beyond 2 intervals + 60 s for 1h
    code, doc = status_json(status, config_for(), "--now", str(later))
    assert code == EXIT_UNHEALTHY
    btc, eth = by_pair(doc)["BTCUSDT/1m"], by_pair(doc)["ETHUSDT/1h"]
    assert btc["behind"] == 121 and eth["behind"] == 2
    assert btc["gaps"] == []  # the missing tail is staleness, not a gap
    assert btc["stale_ms"] == 2 * HOUR_MS + M + 30_000
    assert [(b["check"], b["subject"]) for b in doc["breaches"]] == [
        ("stale", "BTCUSDT/1m"),
        ("stale", "ETHUSDT/1h"),
    ]
    code, doc = status_json(status, config_for(), "--now", str(later), "--max-stale", "3h")
    assert code == 0, doc["breaches"]


def test_sync_state_pointer_is_checked_against_the_data(
    db_dsn: str, config_for: Callable[..., Path], status: StatusRun
) -> None:
    write(db_dsn, minute_candles() + hour_candles())
    with db.connect(db_dsn) as conn:
        conn.execute(
            "DELETE FROM candlesticks WHERE symbol = 'BTCUSDT' AND ts = %s::timestamptz",
            ("2024-01-01T05:59:00Z",),
        )
        conn.commit()
    code, doc = status_json(status, config_for(), "--now", str(NOW))
    assert code == EXIT_UNHEALTHY
    assert by_pair(doc)["BTCUSDT/1m"]["pointer"] == "ahead"
    assert checks(doc) == ["pointer"]


def test_consumer_lag_per_partition_and_dlq_count(
    db_dsn: str,
    kafka_cfg: KafkaConfig,
    config_for: Callable[..., Path],
    status: StatusRun,
) -> None:
    write(db_dsn, minute_candles() + hour_candles())
    config = config_for()
    group = yaml.safe_load(config.read_text())["sink"]["group_id"]
    producer = make_producer(kafka_cfg)
    for i in range(10):
        producer.produce(kafka_cfg.topic, key=b"BTCUSDT|1m", value=b"v%d" % i, partition=0)
    for i in range(4):
        producer.produce(kafka_cfg.topic, key=b"ETHUSDT|1h", value=b"w%d" % i, partition=1)
    for i in range(2):
        producer.produce(kafka_cfg.dlq_topic, value=b"bad%d" % i)
    assert producer.flush(30) == 0
    consumer = make_consumer(kafka_cfg, group)
    consumer.commit(offsets=[TopicPartition(kafka_cfg.topic, 0, 7)], asynchronous=False)
    consumer.close()

    code, doc = status_json(status, config, "--now", str(NOW))
    assert code == 0, doc["breaches"]
    partitions = {p["partition"]: p for p in doc["kafka"]["partitions"]}
    assert (partitions[0]["committed"], partitions[0]["high"], partitions[0]["lag"]) == (7, 10, 3)
    assert (partitions[1]["committed"], partitions[1]["high"], partitions[1]["lag"]) == (None, 4, 4)
    assert partitions[2]["lag"] == 0
    assert doc["kafka"]["total_lag"] == 7
    assert doc["kafka"]["dlq_records"] == 2

    code, doc = status_json(status, config, "--now", str(NOW), "--max-lag", "7")
    assert code == 0, doc["breaches"]
    code, doc = status_json(status, config, "--now", str(NOW), "--max-lag", "6", "--max-dlq", "1")
    assert code == EXIT_UNHEALTHY
    assert checks(doc) == ["lag", "dlq"]


def test_unreachable_kafka_is_a_row_not_a_traceback(
    db_dsn: str, kafka_cfg: KafkaConfig, config_for: Callable[..., Path], status: StatusRun
) -> None:
    write(db_dsn, minute_candles() + hour_candles())
    dead = kafka_cfg.model_dump(mode="json") | {"bootstrap_servers": f"127.0.0.1:{free_port()}"}
    config = config_for(kafka=dead)
    code, text, err = status(config, "--now", str(NOW), "--timeout", "3")
    assert code == EXIT_UNHEALTHY
    assert "Traceback" not in err
    assert "UNREACHABLE" in text
    assert "kafka    127.0.0.1:" in text
    assert "BTCUSDT/1m" in text  # the database part is still reported


def test_unreachable_database_is_a_row_not_a_traceback(
    config_for: Callable[..., Path], status: StatusRun
) -> None:
    dsn = f"postgresql://postgres:postgres@127.0.0.1:{free_port()}/nowhere"
    code, doc = status_json(status, config_for(dsn=dsn), "--now", str(NOW))
    assert code == EXIT_UNHEALTHY
    assert doc["database"]["error"]
    assert checks(doc) == ["database"]
    assert doc["kafka"]["error"] is None  # Kafka is still reported


def test_month_pairs_are_stepped_by_the_calendar(
    db_dsn: str, config_for: Callable[..., Path], status: StatusRun
) -> None:
    jan, feb, mar, apr, may = (
        1_704_067_200_000,
        1_706_745_600_000,
        1_709_251_200_000,
        1_711_929_600_000,
        1_714_521_600_000,
    )
    write(db_dsn, [make_kline("BNBUSDT", "1M", t) for t in (jan, feb, apr)])
    code, doc = status_json(
        status, config_for(pairs=["BNBUSDT/1M"]), "--now", str(may + 3 * DAY_MS)
    )
    bnb = by_pair(doc)["BNBUSDT/1M"]
    assert bnb["gaps"] == [{"start_ms": mar, "end_ms": apr, "missing": 1}]
    assert bnb["expected"] == 4 and bnb["present"] == 3 and bnb["behind"] == 0
    assert code == EXIT_UNHEALTHY and checks(doc) == ["gaps"]


def test_a_pair_listed_after_the_start_date_is_measured_from_its_first_candle(
    db_dsn: str, config_for: Callable[..., Path], status: StatusRun
) -> None:
    listed = T0 + 3 * HOUR_MS
    write(db_dsn, [make_kline("ETHUSDT", "1h", listed + i * HOUR_MS) for i in range(3)])
    code, doc = status_json(status, config_for(pairs=["ETHUSDT/1h"]), "--now", str(NOW))
    eth = by_pair(doc)["ETHUSDT/1h"]
    assert eth["window_start_ms"] == listed
    assert (eth["expected"], eth["coverage"]) == (3, 1.0)
    assert code == 0, doc["breaches"]


class _ServerTime(BaseHTTPRequestHandler):
    server_ms = NOW

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = json.dumps({"serverTime": self.server_ms}).encode()
        self.send_response(200 if self.path == "/fapi/v1/time" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        return


@pytest.fixture
def exchange_time_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ServerTime)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_now_can_come_from_the_exchange_clock(
    db_dsn: str, config_for: Callable[..., Path], status: StatusRun, exchange_time_url: str
) -> None:
    write(db_dsn, minute_candles() + hour_candles())
    code, doc = status_json(status, config_for(), "--exchange-time-from", exchange_time_url)
    assert doc["clock"] == exchange_time_url
    # Corrected to mid-request, the exchange's 06:00:30 stays within a second of itself.
    assert abs(doc["now_ms"] - NOW) < 1_000
    assert code == 0, doc["breaches"]


def test_an_unmigrated_database_is_a_row_not_a_traceback(
    db_dsn: str, config_for: Callable[..., Path], status: StatusRun
) -> None:
    with db.connect(db_dsn) as conn:
        conn.execute(
            "DROP TABLE candlesticks, sync_state, empty_ranges, qryptify_schema_migrations"
        )
        conn.commit()
    code, doc = status_json(status, config_for(), "--now", str(NOW))
    assert code == EXIT_UNHEALTHY
    assert checks(doc) == ["database"]
    assert "qryptify migrate" in doc["database"]["error"]
    assert "candlesticks" in doc["database"]["error"]


class WritesBetweenQueries:
    """A connection on which another client commits a newer candle (and advances sync_state,
    as the sink does) right after the first query of a pair's read."""

    def __init__(self, conn: db.Connection, dsn: str) -> None:
        self.conn = conn
        self.dsn = dsn
        self.queries = 0

    def execute(self, query: Any, params: Any = None) -> Any:
        result = self.conn.execute(query, params)
        if "candlesticks" in str(query):
            self.queries += 1
            if self.queries == 1:
                write(self.dsn, [make_kline("BTCUSDT", "1m", T0 + 360 * MINUTE_MS)])
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


def test_a_pair_is_read_from_one_snapshot(db_dsn: str) -> None:
    from qryptify.commands.status import read_pair
    from qryptify.pairs import Pair

    write(db_dsn, minute_candles())
    with db.connect(db_dsn, autocommit=True) as conn:
        racing = WritesBetweenQueries(conn, db_dsn)
        facts = read_pair(racing, Pair("BTCUSDT", "1m"), T0, T0 + 400 * MINUTE_MS)  # type: ignore[arg-type]
    assert racing.queries > 1  # the write happened between this read's queries
    newest = T0 + 359 * MINUTE_MS
    assert (facts.last_ms, facts.pointer_ms) == (newest, newest)  # both from before the write
