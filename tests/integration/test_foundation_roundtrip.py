"""The foundation's promise: Avro records go through the real broker into the real database."""

from __future__ import annotations

import psycopg

from qryptify import db
from qryptify.avro import KlineCodec
from qryptify.config import Config
from qryptify.kafka import make_consumer, make_producer
from qryptify.kline import Kline, latest_per_key
from tests.conftest import T0, make_kline
from tests.integration.conftest import unique


def test_avro_records_flow_from_kafka_into_postgres(app_config: Config) -> None:
    codec = KlineCodec()
    sent = [make_kline("BTCUSDT", "1m", T0 + i * 60_000, close=f"{42000 + i}.5") for i in range(50)]
    sent += [
        make_kline("ETHUSDT", "1m", T0 + i * 60_000, close=f"{2200 + i}.25") for i in range(50)
    ]
    producer = make_producer(app_config.kafka)
    for k in sent:
        producer.produce(app_config.kafka.topic, key=k.key.encode(), value=codec.encode(k))
    assert producer.flush(30) == 0

    consumer = make_consumer(app_config.kafka, unique("group"))
    consumer.subscribe([app_config.kafka.topic])
    received: list[tuple[int, Kline]] = []
    for _ in range(60):
        for msg in consumer.consume(num_messages=500, timeout=1.0):
            assert msg.error() is None
            value, offset = msg.value(), msg.offset()
            assert value is not None and offset is not None
            event = codec.decode(value)
            assert isinstance(event, Kline)
            assert msg.key() == event.key.encode()
            received.append((offset, event))
        if len(received) >= len(sent):
            break
    consumer.close()
    assert sorted((k.symbol, k.open_time) for _, k in received) == sorted(
        (k.symbol, k.open_time) for k in sent
    )

    with db.connect(app_config.db.dsn.get_secret_value()) as conn:
        result = db.write_batch(conn, latest_per_key(received))
        assert result.written == 100
        again = db.write_batch(conn, latest_per_key(received))
        assert (again.written, again.unchanged) == (0, 100)
        rows = conn.execute(
            "SELECT symbol, extract(epoch FROM ts)::bigint * 1000, close FROM candlesticks"
            " ORDER BY symbol, ts"
        ).fetchall()
        state = conn.execute(
            "SELECT symbol, extract(epoch FROM last_closed_ts)::bigint * 1000 FROM sync_state"
            " ORDER BY symbol"
        ).fetchall()
    expected = sorted((k.symbol, k.open_time, float(k.close)) for k in sent)
    assert rows == expected
    assert state == [("BTCUSDT", T0 + 49 * 60_000), ("ETHUSDT", T0 + 49 * 60_000)]


def test_database_fixture_fails_loudly_when_unreachable() -> None:
    # The fixtures must fail, not skip, when PostgreSQL is down: prove the edge raises.
    try:
        db.connect("postgresql://postgres:secretpw@127.0.0.1:1/none", connect_timeout_s=2)
    except Exception as exc:
        assert "secretpw" not in str(exc)
        assert not isinstance(exc, psycopg.Error)
    else:  # pragma: no cover - would mean something listens on port 1
        raise AssertionError("connection to port 1 unexpectedly succeeded")
