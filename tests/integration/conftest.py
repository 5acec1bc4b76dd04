"""Real Kafka and real PostgreSQL from stack/ (``make test`` starts them on their own ports).

Each test gets a unique topic set, consumer group and database. Nothing here skips: when a
service is missing the fixture fails and says how to start it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

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


def fresh_topics(bootstrap: str, prefix: str = "test") -> KafkaConfig:
    """Fresh topics (klines, offsets, dlq), 3 partitions, created."""
    base = unique(prefix)
    cfg = KafkaConfig(
        bootstrap_servers=bootstrap,
        topic=f"{base}.klines",
        offsets_topic=f"{base}.offsets",
        dlq_topic=f"{base}.dlq",
        partitions=3,
        linger_ms=1,
    )
    ensure_topics(cfg)
    return cfg


@pytest.fixture
def kafka_cfg(kafka_bootstrap: str) -> KafkaConfig:
    """Fresh topics (klines, offsets, dlq) for this test, 3 partitions."""
    return fresh_topics(kafka_bootstrap)


@contextlib.contextmanager
def fresh_database(admin_dsn: str, prefix: str = "test", *, migrated: bool = True) -> Iterator[str]:
    """A new database with a unique name (migrated unless told otherwise), its DSN; dropped
    on leaving."""
    name = unique(prefix).replace("-", "_")
    db.create_database(admin_dsn, name)
    try:
        dsn = admin_dsn.rsplit("/", 1)[0] + f"/{name}"
        if migrated:
            with db.connect(dsn) as conn:
                db.migrate(conn)
        yield dsn
    finally:
        db.drop_database(admin_dsn, name)


@pytest.fixture
def db_dsn(pg_admin_dsn: str) -> Iterator[str]:
    """A fresh, migrated database for this test; dropped afterwards."""
    with fresh_database(pg_admin_dsn) as dsn:
        yield dsn


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


# --------------------------------------------------------------------------------------------
# A private PostgreSQL cluster that a test may stop and start (the shared test cluster never
# goes down). initdb + pg_ctl from the Debian packages, run as the `postgres` OS user.
# --------------------------------------------------------------------------------------------


class PrivatePostgres:
    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.data = root / "data"
        self.port = port
        self.log = root / "postgres.log"
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        if not bins:
            pytest.fail("no /usr/lib/postgresql/*/bin/pg_ctl: install postgresql", pytrace=False)
        self.bin = bins[-1].parent

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres:postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> None:
        proc = subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            user="postgres" if os.geteuid() == 0 else None,
            cwd=self.root,
            env={"PATH": "/usr/bin:/bin", "LANG": "C"},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            pytest.fail(f"{args[0]} failed: {(proc.stdout + proc.stderr)[-800:]}", pytrace=False)

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c full_page_writes=off"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    """A throwaway PostgreSQL on a free port, started; stopped and removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="qryptify-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    root.chmod(0o700)
    pg = PrivatePostgres(root, _free_port())
    pg.init()
    pg.start()
    try:
        yield pg
    finally:
        with contextlib.suppress(BaseException):
            pg.stop()
        shutil.rmtree(root, ignore_errors=True)
