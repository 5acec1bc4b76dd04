"""Real Kafka and real PostgreSQL from stack/ (``make test`` starts them on their own ports).

Each test gets a unique topic set, consumer group and database. Nothing here skips: when a
service is missing the fixture fails and says how to start it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from confluent_kafka.admin import AdminClient

from qryptify import db
from qryptify.config import Config, KafkaConfig, build_config
from qryptify.kafka import ensure_topics

KAFKA = os.environ.get("QRYPTIFY_TEST_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
PG_ADMIN = os.environ.get(
    "QRYPTIFY_TEST_PG_DSN", "postgresql://postgres:postgres@127.0.0.1:15432/postgres"
)
HOW = "start it with `make stack-test-up` (make test does this for you)"


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    try:
        AdminClient({"bootstrap.servers": KAFKA}).list_topics(timeout=15)
    except Exception as exc:
        pytest.fail(f"Kafka at {KAFKA} is not reachable ({exc}); {HOW}", pytrace=False)
    return KAFKA


@pytest.fixture(scope="session")
def pg_admin_dsn() -> str:
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=10) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        pytest.fail(f"PostgreSQL at {PG_ADMIN} is not reachable ({exc}); {HOW}", pytrace=False)
    return PG_ADMIN


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def kafka_cfg(kafka_bootstrap: str) -> KafkaConfig:
    """Fresh topics (klines, offsets, dlq) for this test, 3 partitions."""
    base = unique("test")
    cfg = KafkaConfig(
        bootstrap_servers=kafka_bootstrap,
        topic=f"{base}.klines",
        offsets_topic=f"{base}.offsets",
        dlq_topic=f"{base}.dlq",
        partitions=3,
        linger_ms=1,
    )
    ensure_topics(cfg)
    return cfg


@pytest.fixture
def db_dsn(pg_admin_dsn: str) -> Iterator[str]:
    """A fresh, migrated database for this test; dropped afterwards."""
    name = unique("test").replace("-", "_")
    db.create_database(pg_admin_dsn, name)
    dsn = pg_admin_dsn.rsplit("/", 1)[0] + f"/{name}"
    with db.connect(dsn) as conn:
        db.migrate(conn)
    yield dsn
    db.drop_database(pg_admin_dsn, name)


@pytest.fixture
def app_config(kafka_cfg: KafkaConfig, db_dsn: str) -> Config:
    return build_config(
        {
            "pairs": ["BTCUSDT/1m", "ETHUSDT/1m"],
            "db": {"dsn": db_dsn},
            "kafka": kafka_cfg.model_dump(mode="json"),
            "sink": {"group_id": unique("sink")},
            "metrics": {"port": 0},
        }
    )
