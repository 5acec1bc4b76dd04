"""What the ``make bench`` experiments share: the simulator and the services as subprocesses
(with their CPU and memory read from /proc), configs, topics and databases made per measurement.

Processes are started and waited for with the shared test kit (``tests.support.processes``);
what is the bench's own is measuring them: a /proc sampler and ``wait4`` for exact CPU time.
Every process started here is stopped by whoever started it (context managers), by its pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from qryptify import db
from qryptify.config import KafkaConfig
from qryptify.kafka import TopicPartition, ensure_topics, make_consumer
from sim.bars import SymbolSpec
from sim.symbols import symbols_to_yaml
from tests.support import processes

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


# ---------------------------------------------------------------------------------------------
# /proc readings
# ---------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (this process only, not its children), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in KiB."""
    rss = hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    return rss, hwm


@dataclass(slots=True)
class Usage:
    """What one process used: sampled while it ran, exact (wait4) once it was reaped."""

    peak_rss_kb: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    samples: list[tuple[float, float, int]] = field(default_factory=list)  # (t, cpu_s, rss_kb)

    @property
    def peak_rss_mb(self) -> float:
        return self.peak_rss_kb / 1024

    def cpu_between(self, t0: float, t1: float) -> float:
        """CPU seconds used between two wall offsets (from the samples)."""

        def at(t: float) -> float:
            best = 0.0
            for ts, cpu, _rss in self.samples:
                if ts > t:
                    break
                best = cpu
            return best

        return at(t1) - at(t0)


class Sampler:
    """Reads /proc/<pid> every ``every_s`` in a thread: CPU time and RSS over time."""

    def __init__(self, pid: int, every_s: float = 0.1) -> None:
        self.pid = pid
        self.every_s = every_s
        self.usage = Usage()
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sampler-{pid}", daemon=True)
        self._thread.start()

    def sample(self) -> None:
        try:
            cpu = cpu_seconds(self.pid)
            rss, hwm = memory_kb(self.pid)
        except (OSError, IndexError, ValueError):
            return  # exited (or a zombie without /proc details)
        if rss == 0 and hwm == 0:
            return
        self.usage.cpu_s = max(self.usage.cpu_s, cpu)
        self.usage.peak_rss_kb = max(self.usage.peak_rss_kb, hwm, rss)
        self.usage.samples.append((time.monotonic() - self.started, cpu, rss))

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.sample()

    def stop(self) -> Usage:
        self._stop.set()
        self._thread.join(timeout=5)
        self.usage.wall_s = time.monotonic() - self.started
        return self.usage


# ---------------------------------------------------------------------------------------------
# processes
# ---------------------------------------------------------------------------------------------


@dataclass
class Proc:
    """A subprocess with its log file and a /proc sampler; reaped with wait4 for exact usage."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    sampler: Sampler
    usage: Usage | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.returncode is None and self._try_reap() is None

    def _try_reap(self) -> int | None:
        if self.popen.returncode is not None:
            return self.popen.returncode
        pid, status, rusage = os.wait4(self.pid, os.WNOHANG)
        if pid == 0:
            return None
        self._finish(status, rusage)
        return self.popen.returncode

    def _finish(self, status: int, rusage: Any) -> None:
        self.popen.returncode = os.waitstatus_to_exitcode(status)
        usage = self.sampler.stop()
        # wait4's CPU times are exact for the whole life of the process. Its ru_maxrss is not
        # used: Linux folds the forking parent's RSS into it (the pre-exec copy), so the
        # peak is VmHWM as last sampled (a high-water mark: only growth in the last interval
        # before exit could be missed).
        usage.cpu_s = float(rusage.ru_utime + rusage.ru_stime)
        self.usage = usage

    def wait(self, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while True:
            code = self._try_reap()
            if code is not None:
                return code
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.name} still running after {timeout_s:.0f}s")
            time.sleep(0.05)

    def stop(self, timeout_s: float = 60.0) -> Usage:
        """SIGTERM, wait (SIGKILL after ``timeout_s``); returns the process's usage."""
        if self._try_reap() is None:
            self.sampler.sample()
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.wait(timeout_s)
            except TimeoutError:
                self.popen.send_signal(signal.SIGKILL)
                self.wait(30)
        assert self.usage is not None
        return self.usage


_local = threading.local()


@contextlib.contextmanager
def service_env(**values: str) -> Iterator[None]:
    """Extra environment for the processes this THREAD spawns inside the block (every config
    key of a service has an environment override, e.g. ``QRYPTIFY_REST__KLINES_LIMIT``)."""
    saved: dict[str, str] = getattr(_local, "env", {})
    _local.env = {**saved, **values}
    try:
        yield
    finally:
        _local.env = saved


def spawn(name: str, module: str, args: Sequence[str], log: Path) -> Proc:
    """``python -m module args…`` (the kit's spawn), with this thread's ``service_env`` and
    a /proc sampler."""
    log.parent.mkdir(parents=True, exist_ok=True)
    extra: dict[str, str] = getattr(_local, "env", {})
    popen = processes.spawn(module, args, log, env={**os.environ, "PYTHONUNBUFFERED": "1", **extra})
    return Proc(name, popen, log, Sampler(popen.pid))


class Sim(processes.SimProcess):
    """The kit's simulator process (its own core, like the real exchange is another machine),
    plus what the bench reads of it: its CPU time."""

    def cpu_s(self) -> float:
        return cpu_seconds(self.proc.pid)


@contextlib.contextmanager
def simulator(
    workdir: Path,
    symbols: Sequence[SymbolSpec],
    *,
    start: str | int,
    speed: float = 1.0,
    weight_limit: int = 10_000_000,
    weight_window_s: float = 60.0,
    extra: Sequence[str] = (),
    name: str = "sim",
) -> Iterator[Sim]:
    workdir.mkdir(parents=True, exist_ok=True)
    symbol_file = workdir / f"{name}-symbols.yaml"
    symbol_file.write_text(symbols_to_yaml(symbols))
    sim = Sim(
        workdir / f"{name}.log",
        *("--symbols", str(symbol_file), "--start", str(start), "--speed", str(speed)),
        *("--weight-limit", str(weight_limit), "--weight-window-s", str(weight_window_s)),
        *("--ping-interval-s", "0", *extra),
        timeout_s=60,
    )
    try:
        yield sim
    finally:
        sim.stop()


@contextlib.contextmanager
def profiled_services(**outputs: Path) -> Iterator[None]:
    """Services this THREAD starts inside the block run under pyinstrument (text report to
    ``outputs[name]``, written when the service exits), e.g. ``profiled_services(backfiller=p)``.
    """
    saved: dict[str, Path] = getattr(_local, "profile", {})
    _local.profile = {**saved, **outputs}
    try:
        yield
    finally:
        _local.profile = saved


def service(name: str, config: Path, workdir: Path, tag: str = "") -> Proc:
    """``python -m services.<name> --config config`` with its output in ``workdir``."""
    profile: Path | None = getattr(_local, "profile", {}).get(name)
    args = ["-m", f"services.{name}", "--config", str(config)]
    if profile is None:
        return spawn(name, f"services.{name}", args[2:], workdir / f"{name}{tag}.log")
    profile.parent.mkdir(parents=True, exist_ok=True)
    profiler = ["-r", "text", "--no-color", "-o", str(profile), "-i", "0.002"]
    return spawn(name, "pyinstrument", [*profiler, *args], workdir / f"{name}{tag}.log")


# ---------------------------------------------------------------------------------------------
# configs, topics, databases
# ---------------------------------------------------------------------------------------------


def run_id() -> str:
    return uuid.uuid4().hex[:8]


def kafka_config(bootstrap: str, prefix: str, partitions: int = 6) -> KafkaConfig:
    cfg = KafkaConfig(
        bootstrap_servers=bootstrap,
        topic=f"{prefix}.klines",
        offsets_topic=f"{prefix}.offsets",
        dlq_topic=f"{prefix}.dlq",
        partitions=partitions,
    )
    ensure_topics(cfg)
    return cfg


def delete_topics(kafka: KafkaConfig) -> None:
    from confluent_kafka.admin import AdminClient

    from qryptify.kafka import client_settings

    admin = AdminClient(client_settings(kafka))
    futures = admin.delete_topics([kafka.topic, kafka.offsets_topic, kafka.dlq_topic])
    for future in futures.values():
        with contextlib.suppress(Exception):
            future.result(timeout=30)


def write_config(path: Path, doc: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(json.loads(json.dumps(doc)), sort_keys=False))
    return path


def base_doc(
    *,
    pairs: Sequence[str],
    kafka: KafkaConfig,
    dsn: str,
    sim_url: str | None = None,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "pairs": list(pairs),
        "db": {"dsn": dsn},
        "kafka": kafka.model_dump(mode="json"),
        "metrics": {"port": 0},
        "log": {"level": "INFO", "format": "human"},
    }
    if sim_url is not None:
        doc["rest"] = {"endpoint": sim_url, "timeout_s": 60}
        doc["ws"] = {"endpoint": f"{sim_url.replace('http://', 'ws://', 1)}/market/stream"}
        doc["archive"] = {"endpoint": sim_url, "cache_dir": str(cache_dir) if cache_dir else None}
    return doc


@contextlib.contextmanager
def database(admin_dsn: str, name: str) -> Iterator[str]:
    """A fresh, migrated database; dropped afterwards."""
    db.drop_database(admin_dsn, name)
    db.create_database(admin_dsn, name)
    dsn = f"{admin_dsn.rsplit('/', 1)[0]}/{name}"
    try:
        with db.connect(dsn) as conn:
            db.migrate(conn)
        yield dsn
    finally:
        db.drop_database(admin_dsn, name)


def table_rows(dsn: str) -> int:
    with db.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM candlesticks").fetchone()
    return 0 if row is None else int(row[0])


class LastRowWatch:
    """When the newest candle of every pair is in the table: ``sync_state`` (a row per pair,
    written in the transaction of its rows) polled every ``every_s`` in a thread, from
    ``start()`` on. A pair's rows are committed in the order they were published, so its last
    candle in the table means all of them are (the caller counts the rows afterwards)."""

    def __init__(self, dsn: str, pairs: int, last_open_ms: int, every_s: float = 0.02) -> None:
        self.dsn = dsn
        self.pairs = pairs
        self.last_open_ms = last_open_ms
        self.every_s = every_s
        self.at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="last-row-watch", daemon=True)

    def start(self) -> LastRowWatch:
        self._thread.start()
        return self

    def stop(self) -> float | None:
        """The monotonic time the last rows landed (None if not seen)."""
        self._stop.set()
        self._thread.join(10)
        return self.at

    def _run(self) -> None:
        query = (
            "SELECT count(*) FROM sync_state"
            " WHERE last_closed_ts >= TIMESTAMPTZ 'epoch' + %s * INTERVAL '1 millisecond'"
        )
        conn: db.Connection | None = None
        while not self._stop.wait(self.every_s):
            try:
                if conn is None:
                    conn = db.connect(self.dsn, autocommit=True)
                row = conn.execute(query, (self.last_open_ms,)).fetchone()
            except Exception as exc:
                if not db.is_database_error(exc):
                    raise
                # Not migrated yet: sync_state appears with the sink's first connect.
                if conn is not None:
                    conn.close()
                conn = None
                continue
            if row is not None and int(row[0]) >= self.pairs:
                self.at = time.monotonic()
                break
        if conn is not None:
            conn.close()


def topic_end(kafka: KafkaConfig, topic: str | None = None) -> int:
    """Sum of the high watermarks of ``topic`` (records ever written to it)."""
    name = topic or kafka.topic
    consumer = make_consumer(kafka, f"bench-size-{run_id()}")
    try:
        meta = consumer.list_topics(name, timeout=10).topics.get(name)
        if meta is None or meta.error is not None:
            return 0
        return sum(
            consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1]
            for p in meta.partitions
        )
    finally:
        consumer.close()


def group_lag(kafka: KafkaConfig, group: str) -> int:
    """Records of the topic not yet committed by ``group``."""
    consumer = make_consumer(kafka, group)
    try:
        meta = consumer.list_topics(kafka.topic, timeout=10).topics[kafka.topic]
        parts = [TopicPartition(kafka.topic, p) for p in meta.partitions]
        lag = 0
        for tp in consumer.committed(parts, timeout=10):
            high = consumer.get_watermark_offsets(tp, timeout=10)[1]
            lag += max(0, high - max(tp.offset, 0))
        return lag
    finally:
        consumer.close()


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
    """The kit's ``wait_until``; returns the monotonic time the predicate held."""
    processes.wait_until(predicate, timeout_s, what)
    return time.monotonic()


def summary_values(log_text: str, marker: str = "backfill summary:") -> dict[str, str]:
    """``key=value`` pairs of the last summary line a service logged."""
    lines = [line for line in log_text.splitlines() if marker in line]
    if not lines:
        return {}
    values: dict[str, str] = {}
    for token in lines[-1].split(marker, 1)[1].split():
        key, sep, value = token.partition("=")
        if sep:
            values[key] = value
    return values
