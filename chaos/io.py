"""The chaos run's edges: its own Kafka + PostgreSQL stack, the services as processes it can
kill -9, and the observers (a topic reader and a sampler) that feed the pure checks of
``chaos.check``. Sequenced by ``chaos.run``. Processes are started, waited for and stopped with
the test kit (``tests.support.processes``: spawn, terminate, the simulator process).

Every process started here is stopped here, by its own pid.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import yaml

from chaos.check import (
    KIND_EMPTY,
    KIND_KLINE,
    CommitAudit,
    Entry,
    Exit,
    Ident,
    PairKey,
    SyncStateTracker,
    TopicIndex,
    entry_from_event,
    value_key,
)
from qryptify.avro import KlineCodec
from qryptify.config import KafkaConfig
from qryptify.kafka import KafkaException, TopicPartition, headers_dict, make_consumer
from qryptify.kline import EmptyRange, Kline
from qryptify.sink.batch import Record, split_batch
from stack.settings import CONTROLLER_OFFSET, StackSettings, resolve_settings
from stack.supervisor import program_states
from tests.support.processes import clean_env, run_module, spawn, terminate

logger = logging.getLogger("chaos")

REPO = Path(__file__).resolve().parents[1]
#: librdkafka's logical "beginning of the partition".
OFFSET_BEGINNING = -2


def quiet_logger() -> logging.Logger:
    """librdkafka's own log lines (connection refused while the broker restarts, …) would
    drown the run's output: this process's clients log nowhere."""
    log = logging.getLogger("chaos.librdkafka")
    log.propagate = False
    if not log.handlers:
        log.addHandler(logging.NullHandler())
    return log


def _ignore(_err: object) -> None:
    return None


QUIET: dict[str, Any] = {"logger": quiet_logger(), "error_cb": _ignore}


def say(message: str) -> None:
    print(f"chaos {time.strftime('%H:%M:%S')} {message}", flush=True)


# -- the stack ------------------------------------------------------------------------------


@dataclass
class ChaosStack:
    """A private ``python -m stack`` instance (own dir and ports): its broker and database
    may be restarted and killed without disturbing the shared test stack."""

    stack_dir: Path
    kafka_port: int
    pg_port: int
    password: str
    brokers: int = 1

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.kafka_port + i}" for i in range(self.brokers))

    def kafka_program(self, node_id: int) -> str:
        return "kafka" if self.brokers == 1 else f"kafka-{node_id}"

    def restarted(self, name: str, old_pid: int) -> bool:
        """Supervisord runs ``name`` again, as a new process."""
        info = program_states(self.settings()).get(name, {})
        return info.get("statename") == "RUNNING" and int(info.get("pid", 0)) not in (0, old_pid)

    def active_controller(self) -> int:
        """The KRaft quorum's leader, as the nodes last recorded it (highest epoch wins)."""
        best = (-1, -1)
        for node in self.settings().kafka_nodes:
            state = node.data / "__cluster_metadata-0" / "quorum-state"
            try:
                doc = json.loads(state.read_text())
            except (OSError, ValueError):
                continue
            epoch, leader = int(doc.get("leaderEpoch", -1)), int(doc.get("leaderId", -1))
            if leader > 0 and epoch > best[0]:
                best = (epoch, leader)
        if best[1] < 0:
            raise RuntimeError("no KRaft quorum leader recorded by any node")
        return best[1]

    def admin_dsn(self, database: str = "postgres") -> str:
        password = quote(self.password, safe="")
        return f"postgresql://postgres:{password}@127.0.0.1:{self.pg_port}/{database}"

    @property
    def config_path(self) -> Path:
        return self.stack_dir / "chaos-stack.yaml"

    def env(self) -> dict[str, str]:
        return clean_env(
            {
                "QRYPTIFY_STACK_DIR": str(self.stack_dir),
                "QRYPTIFY_KAFKA_PORT": str(self.kafka_port),
                "QRYPTIFY_KAFKA_CONTROLLER_PORT": str(
                    self.kafka_port + (1 if self.brokers == 1 else CONTROLLER_OFFSET)
                ),
                "QRYPTIFY_KAFKA_BROKERS": str(self.brokers),
                "QRYPTIFY_PG_PORT": str(self.pg_port),
            }
        )

    def _write_config(self) -> None:
        self.stack_dir.mkdir(parents=True, exist_ok=True)
        doc = {"kafka": {"bootstrap_servers": self.bootstrap}, "db": {"dsn": self.admin_dsn()}}
        self.config_path.write_text(yaml.safe_dump(doc))
        self.config_path.chmod(0o600)

    def settings(self) -> StackSettings:
        return resolve_settings(
            profile="default",
            repo=REPO,
            config=yaml.safe_load(self.config_path.read_text()),
            config_path=self.config_path,
            env=self.env(),
        )

    def _stack(self, *args: str, timeout_s: float = 600.0) -> subprocess.CompletedProcess[str]:
        return run_module(
            "stack",
            *args,
            "--profile",
            "default",
            "--config",
            str(self.config_path),
            timeout_s=timeout_s,
            env=self.env(),
        )

    def up(self) -> None:
        self._write_config()
        proc = self._stack("up", "--timeout", "240")
        if proc.returncode != 0:
            raise RuntimeError(f"chaos stack did not start:\n{proc.stdout}\n{proc.stderr}")

    def down(self) -> None:
        self._stack("down", timeout_s=300)

    def restart(self, name: str) -> float:
        """supervisorctl restart (graceful stop, start) and wait until it answers."""
        started = time.monotonic()
        proc = self._stack("restart", name, timeout_s=400)
        if proc.returncode != 0:
            raise RuntimeError(f"stack restart {name} failed:\n{proc.stdout}\n{proc.stderr}")
        return time.monotonic() - started

    def signal(self, name: str, sig: signal.Signals) -> int:
        """Send ``sig`` to the program's process; supervisord starts it again."""
        info = program_states(self.settings())[name]
        pid = int(info["pid"])
        if pid <= 0:
            raise RuntimeError(f"{name} is not running ({info.get('statename')})")
        os.kill(pid, sig)
        return pid

    def logs_dir(self) -> Path:
        return self.stack_dir / "logs"


def partition_leader(bootstrap: str, topic: str, partition: int = 0) -> int:
    """The broker leading ``topic``'s ``partition`` (its node id)."""
    from confluent_kafka.admin import AdminClient

    meta = AdminClient({"bootstrap.servers": bootstrap, **QUIET}).list_topics(topic, timeout=10)
    leader = int(meta.topics[topic].partitions[partition].leader)
    if leader < 0:
        raise RuntimeError(f"{topic}[{partition}] has no leader")
    return leader


def fully_in_sync(bootstrap: str, topic: str, brokers: int) -> bool:
    """Every broker registered and every partition of ``topic`` with all replicas in sync."""
    from confluent_kafka.admin import AdminClient

    try:
        meta = AdminClient({"bootstrap.servers": bootstrap, **QUIET}).list_topics(timeout=5)
    except KafkaException:
        return False
    found = meta.topics.get(topic)
    if len(meta.brokers) < brokers or found is None or found.error is not None:
        return False
    return all(sorted(p.isrs) == sorted(p.replicas) for p in found.partitions.values())


# -- the services ---------------------------------------------------------------------------


@dataclass
class ServiceSpec:
    name: str  # backfiller, producer, sink-a, sink-b
    module: str  # services.backfiller, ...
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class _Running:
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    expected_exit: bool = False
    restart_at: float | None = None
    failures: int = 0
    starts: int = 0


class Fleet:
    """The services as child processes with a supervisor's restart policy.

    A process that exits on its own is restarted after a growing delay (1, 2, 4 … 10 s) and
    recorded as an unexpected exit; ``kill9`` marks the exit as expected and restarts it after
    the given time. ``exits`` is the record the crash-loop check reads.
    """

    def __init__(
        self, specs: Sequence[ServiceSpec], config: Path, logs: Path, clock0: float
    ) -> None:
        self.specs = {s.name: s for s in specs}
        self.config = config
        self.logs = logs
        self.clock0 = clock0
        self.state = {s.name: _Running() for s in specs}
        self.exits: list[Exit] = []
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="fleet", daemon=True)

    def now_s(self) -> float:
        return time.monotonic() - self.clock0

    def log_path(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def start_all(self) -> None:
        for name in self.specs:
            self._spawn(name)
        self._thread.start()

    def _spawn(self, name: str) -> None:
        spec = self.specs[name]
        run = self.state[name]
        with self.log_path(name).open("ab") as handle:
            handle.write(f"=== chaos: start #{run.starts + 1} at {self.now_s():.1f}s\n".encode())
        run.proc = spawn(
            spec.module,
            ["--config", str(self.config)],
            self.log_path(name),
            env=clean_env(spec.env),
            append=True,
            new_session=True,
        )
        run.started = time.monotonic()
        run.expected_exit = False
        run.restart_at = None
        run.starts += 1

    def _record_exit(self, name: str, run: _Running, code: int | None) -> None:
        uptime = time.monotonic() - run.started
        self.exits.append(Exit(name, self.now_s(), code, uptime, run.expected_exit))
        with self.log_path(name).open("ab") as handle:
            why = "killed by chaos" if run.expected_exit else "EXITED ON ITS OWN"
            handle.write(f"=== chaos: exit {code} after {uptime:.1f}s ({why})\n".encode())

    def _watch(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                now = time.monotonic()
                for name, run in self.state.items():
                    if run.proc is not None and run.proc.poll() is not None:
                        self._record_exit(name, run, run.proc.returncode)
                        if not run.expected_exit:
                            run.failures += 1
                            run.restart_at = now + min(10.0, 2.0 ** (run.failures - 1))
                            say(
                                f"{name} exited on its own (code {run.proc.returncode}); "
                                f"restart in {run.restart_at - now:.0f}s"
                            )
                        run.proc = None
                    if run.proc is None and run.restart_at is not None and now >= run.restart_at:
                        self._spawn(name)
                    if (
                        run.proc is not None
                        and run.failures
                        and now - run.started > 30
                        and run.proc.poll() is None
                    ):
                        run.failures = 0
            time.sleep(0.1)

    def kill9(self, name: str, down_s: float) -> bool:
        """SIGKILL the service; it starts again ``down_s`` later. False if it was not up."""
        with self._lock:
            run = self.state[name]
            proc = run.proc
            if proc is None or proc.poll() is not None:
                return False
            run.expected_exit = True
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            self._record_exit(name, run, proc.returncode)
            run.proc = None
            run.restart_at = time.monotonic() + down_s
            return True

    def running(self, name: str) -> bool:
        with self._lock:
            proc = self.state[name].proc
            return proc is not None and proc.poll() is None

    def all_up_since(self, seconds: float) -> bool:
        with self._lock:
            now = time.monotonic()
            return all(
                r.proc is not None and r.proc.poll() is None and now - r.started >= seconds
                for r in self.state.values()
            )

    def stop_all(self, timeout_s: float = 60.0) -> dict[str, int | None]:
        """SIGTERM everything, wait; returns exit codes (None: had to be SIGKILLed)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        with self._lock:
            procs = {n: r.proc for n, r in self.state.items() if r.proc is not None}
            for run in self.state.values():
                run.expected_exit = True
            codes = dict(zip(procs, terminate(list(procs.values()), timeout_s), strict=True))
            for name, code in codes.items():
                self._record_exit(name, self.state[name], code)
                self.state[name].proc = None
        return codes


# -- observers ------------------------------------------------------------------------------


def classify(codec: KlineCodec, msg: Any) -> Entry:
    """What the sink must do with one record, decided by the sink's own pure rules."""
    split = split_batch(
        [Record(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value())],
        codec,
    )
    event: Kline | EmptyRange | None = None
    if split.batch.rows:
        event = codec.decode(msg.value())  # the sink accepted it, so it decodes
    elif split.empty_ranges:
        event = split.empty_ranges[0]
    return entry_from_event(msg.offset(), event)


class TopicReader:
    """Reads the klines topic from the beginning into a ``TopicIndex``, continuously."""

    def __init__(self, kafka: KafkaConfig, group: str, partitions: int) -> None:
        self.kafka = kafka
        self.index = TopicIndex()
        self.lock = threading.Lock()
        self.codec = KlineCodec()
        self._consumer = make_consumer(kafka, group, **QUIET)
        self._consumer.assign(
            [TopicPartition(kafka.topic, p, OFFSET_BEGINNING) for p in range(partitions)]
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="topic-reader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                messages = self._consumer.consume(num_messages=5000, timeout=0.5)
            except KafkaException as exc:
                logger.warning("topic reader: %s", exc)
                time.sleep(1)
                continue
            entries = []
            for msg in messages:
                partition = msg.partition()
                if msg.error() is not None or partition is None:
                    continue
                entries.append((partition, classify(self.codec, msg)))
            if entries:
                with self.lock:
                    for partition, entry in entries:
                        self.index.add(partition, entry)

    def caught_up(self, ends: Mapping[int, int]) -> bool:
        with self.lock:
            return all(self.index.read_up_to(p) >= end for p, end in ends.items())

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        with contextlib.suppress(Exception):
            self._consumer.close()


def high_watermarks(kafka: KafkaConfig, topic: str, partitions: int) -> dict[int, int]:
    consumer = make_consumer(kafka, "chaos-watermarks", **QUIET)
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        }
    finally:
        consumer.close()


def read_dlq(kafka: KafkaConfig) -> list[dict[str, bytes]]:
    """Every DLQ record's headers (plus ``value``), up to the high watermark."""
    consumer = make_consumer(kafka, "chaos-dlq-reader", **QUIET)
    found: list[dict[str, bytes]] = []
    try:
        meta = consumer.list_topics(kafka.dlq_topic, timeout=10).topics[kafka.dlq_topic]
        ends = {}
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(kafka.dlq_topic, p), timeout=10
            )
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(kafka.dlq_topic, p, OFFSET_BEGINNING) for p in ends])
        deadline = time.monotonic() + 120
        while ends and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=5000, timeout=0.5):
                partition, offset = msg.partition(), msg.offset()
                if msg.error() is not None or partition is None or offset is None:
                    continue
                found.append({**headers_dict(msg), "value": msg.value() or b""})
                if offset + 1 >= ends.get(partition, 0):
                    ends.pop(partition, None)
    finally:
        consumer.close()
    return found


_ROWS_SQL = """
SELECT c.symbol, c.interval, (extract(epoch FROM c.ts) * 1000)::bigint,
       c.open, c.high, c.low, c.close, c.volume,
       (extract(epoch FROM c.close_time) * 1000)::bigint, c.quote_asset_volume,
       c.number_of_trades, c.taker_buy_base, c.taker_buy_quote
FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS u(s, i, t)
JOIN candlesticks c
  ON c.symbol = u.s AND c.interval = u.i
 AND c.ts = TIMESTAMPTZ 'epoch' + u.t * INTERVAL '1 millisecond'
"""
_RANGES_SQL = """
SELECT r.symbol, r.interval, (extract(epoch FROM r.start_ts) * 1000)::bigint,
       (extract(epoch FROM r.end_ts) * 1000)::bigint
FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS u(s, i, t)
JOIN empty_ranges r
  ON r.symbol = u.s AND r.interval = u.i
 AND r.start_ts = TIMESTAMPTZ 'epoch' + u.t * INTERVAL '1 millisecond'
"""
_SYNC_SQL = (
    "SELECT symbol, interval, (extract(epoch FROM last_closed_ts) * 1000)::bigint FROM sync_state"
)


def db_rows(conn: psycopg.Connection[Any], idents: Iterable[Ident]) -> dict[Ident, int]:
    keys = list(idents)
    if not keys:
        return {}
    found: dict[Ident, int] = {}
    for row in conn.execute(
        _ROWS_SQL, ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys])
    ):
        ident = (str(row[0]), str(row[1]), int(row[2]))
        found[ident] = value_key(
            row[3], row[4], row[5], row[6], row[7], int(row[8]), row[9], int(row[10]), row[11],
            row[12],
        )  # fmt: skip
    return found


def db_ranges(conn: psycopg.Connection[Any], idents: Iterable[Ident]) -> dict[Ident, int]:
    keys = list(idents)
    if not keys:
        return {}
    rows = conn.execute(
        _RANGES_SQL, ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys])
    )
    return {(str(r[0]), str(r[1]), int(r[2])): int(r[3]) for r in rows}


class Sampler:
    """Every ``every_s``: sync_state (invariant 4), then the sink group's committed offsets
    and, right after, the database rows those offsets cover (invariant 2)."""

    def __init__(
        self,
        kafka: KafkaConfig,
        group: str,
        partitions: int,
        dsn: str,
        reader: TopicReader,
        clock0: float,
        every_s: float = 1.0,
    ) -> None:
        self.kafka = kafka
        self.group = group
        self.partitions = partitions
        self.dsn = dsn
        self.reader = reader
        self.clock0 = clock0
        self.every_s = every_s
        self.sync = SyncStateTracker()
        self.audit = CommitAudit()
        self.committed_samples = 0
        self.skipped = 0
        self.last_committed: dict[int, int] = {}
        self._consumer = make_consumer(kafka, group, **QUIET)
        self._conn: psycopg.Connection[Any] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        with contextlib.suppress(Exception):
            self._consumer.close()
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()

    def _db(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=3)
        return self._conn

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.sample()
            except (psycopg.Error, KafkaException, OSError) as exc:
                self.skipped += 1
                if self._conn is not None:
                    with contextlib.suppress(Exception):
                        self._conn.close()
                    self._conn = None
                logger.debug("sample skipped: %s", exc)

    def committed(self) -> dict[int, int]:
        tps = [TopicPartition(self.kafka.topic, p) for p in range(self.partitions)]
        result = self._consumer.committed(tps, timeout=5)
        return {tp.partition: tp.offset for tp in result if tp.offset >= 0 and tp.error is None}

    def sample(self) -> None:
        now_s = time.monotonic() - self.clock0
        conn = self._db()
        rows = conn.execute(_SYNC_SQL).fetchall()
        sync: dict[PairKey, int] = {(str(r[0]), str(r[1])): int(r[2]) for r in rows}
        self.sync.observe(sync, now_s)
        # Invariant 2: the offsets first, the database after.
        committed = self.committed()
        self.committed_samples += 1
        self.last_committed = committed
        # Give the reader a moment when it is behind the committed offsets.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            with self.reader.lock:
                behind = any(self.reader.index.read_up_to(p) < o for p, o in committed.items())
            if not behind:
                break
            time.sleep(0.05)
        with self.reader.lock:
            wanted = self.audit.wanted(self.reader.index, committed)
        klines = {e.ident for es in wanted.values() for e in es if e.kind == KIND_KLINE}
        ranges = {e.ident for es in wanted.values() for e in es if e.kind == KIND_EMPTY}
        found_rows = db_rows(conn, klines)
        found_ranges = db_ranges(conn, ranges)
        ahead = self.audit.settle(committed, wanted, found_rows, found_ranges, now_s)
        for v in ahead[:3]:
            say(
                f"VIOLATION: committed offset {v.committed} on partition {v.partition} covers "
                f"offset {v.offset} {v.ident} but the database has {v.why}"
            )
