"""Readiness: a real Kafka produce+consume round trip; PostgreSQL setup and `SELECT 1`."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from stack.config import READY_TOPIC, Dsn
from stack.procs import port_open

AliveCheck = Callable[[], None]


class NotReady(RuntimeError):
    pass


def _quiet_logger() -> logging.Logger:
    logger = logging.getLogger("stack.kafka-client")
    logger.propagate = False
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    return logger


def _kafka_common(bootstrap: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "logger": _quiet_logger(),
        "error_cb": lambda _err: None,
        "socket.connection.setup.timeout.ms": 3000,
        "broker.address.family": "v4",
    }


def kafka_roundtrip(bootstrap: str, timeout: float) -> None:
    """Create the ready topic if needed, produce a token, read it back in a fresh group."""
    from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    deadline = time.monotonic() + timeout
    common = _kafka_common(bootstrap)
    admin = AdminClient(common)
    topic = NewTopic(
        READY_TOPIC, num_partitions=1, replication_factor=1, config={"retention.ms": "3600000"}
    )
    futures = admin.create_topics([topic], request_timeout=timeout, operation_timeout=timeout)
    try:
        futures[READY_TOPIC].result(timeout)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise NotReady(f"create topic {READY_TOPIC}: {exc.args[0].str()}") from exc

    token = uuid.uuid4().hex
    delivered: list[Any] = []
    producer = Producer(
        {
            **common,
            "acks": "all",
            "enable.idempotence": True,
            "message.timeout.ms": max(1000, int(timeout * 1000)),
        }
    )
    producer.produce(
        READY_TOPIC,
        key=b"ready",
        value=token.encode(),
        on_delivery=lambda err, msg: delivered.append(err),
    )
    producer.flush(max(0.1, deadline - time.monotonic()))
    if not delivered:
        raise NotReady("produce: no delivery report")
    if delivered[0] is not None:
        raise NotReady(f"produce: {delivered[0].str()}")

    consumer = Consumer(
        {
            **common,
            "group.id": f"__qryptify_ready-{token}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.subscribe([READY_TOPIC])
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            if msg.value() == token.encode():
                return
        raise NotReady("consume: the produced record did not come back")
    finally:
        consumer.close()


def wait_kafka(bootstrap: str, port: int, alive: AliveCheck, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "port not open"
    while time.monotonic() < deadline:
        alive()
        if not port_open(port):
            time.sleep(0.3)
            continue
        try:
            kafka_roundtrip(bootstrap, min(30.0, max(1.0, deadline - time.monotonic())))
            return
        except NotReady as exc:
            last = str(exc)
        except Exception as exc:  # any client error means "not yet"
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.5)
    raise NotReady(f"no produce+consume round trip within {timeout:.0f}s ({last})")


def setup_postgres(socket_dir: str, port: int, dsn: Dsn, alive: AliveCheck, timeout: float) -> None:
    """As the superuser over the private unix socket: the DSN's role and database, created
    when missing (``provision``), never altered."""
    import psycopg

    deadline = time.monotonic() + timeout
    last = ""
    while True:
        alive()
        try:
            conn = psycopg.connect(
                host=socket_dir,
                port=port,
                user="postgres",
                dbname="postgres",
                connect_timeout=3,
                autocommit=True,
            )
            break
        except psycopg.OperationalError as exc:
            last = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if time.monotonic() > deadline:
            raise NotReady(f"no connection on the unix socket within {timeout:.0f}s ({last})")
        time.sleep(0.2)
    with conn:
        provision(conn, dsn)
    _add_timescale(socket_dir, port, dsn.dbname)


def provision(conn: Any, dsn: Dsn) -> None:
    """Least privilege, as a superuser session: a missing DSN role is created with LOGIN and
    its password and nothing more (no SUPERUSER, CREATEDB or CREATEROLE), and a missing
    database is created owned by it: the role owns only its database. An existing role is the
    operator's and is never altered (no password reset, no new rights); an existing database
    is left as it is."""
    from psycopg import sql

    role = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (dsn.user,)).fetchone()
    if role is None:
        conn.execute(
            sql.SQL(
                "CREATE ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}"
            ).format(sql.Identifier(dsn.user), sql.Literal(dsn.password))
        )
    has_db = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dsn.dbname,)).fetchone()
    if not has_db:
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(dsn.dbname), sql.Identifier(dsn.user)
            )
        )


def _add_timescale(socket_dir: str, port: int, dbname: str) -> None:
    """Create the timescaledb extension in the database as the superuser when the server has
    it, so that migrations run by the (unprivileged) DSN role find it; silently nothing when
    it is not installed or not preloaded (the table stays plain)."""
    import psycopg

    try:
        with psycopg.connect(
            host=socket_dir, port=port, user="postgres", dbname=dbname, autocommit=True
        ) as conn:
            available = conn.execute(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
            ).fetchone()
            if available:
                conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except psycopg.Error as exc:
        logging.getLogger(__name__).info("timescaledb not created in %s: %s", dbname, exc)


def check_dsn(dsn: Dsn, timeout: float) -> None:
    """What every client does: TCP, password, the configured database, ``SELECT 1``."""
    import psycopg

    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(dsn.url(), connect_timeout=3) as conn:
                row = conn.execute("SELECT 1").fetchone()
                if row == (1,):
                    return
        except psycopg.OperationalError as exc:
            last = str(exc).replace(dsn.password, "***") if dsn.password else str(exc)
            last = last.strip().splitlines()[0] if last.strip() else type(exc).__name__
        time.sleep(0.3)
    raise NotReady(f"SELECT 1 as {dsn.redacted()} failed ({last})")
