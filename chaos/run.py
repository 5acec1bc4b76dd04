"""``make chaos`` (``make chaos QUICK=1``): a seeded, repeatable fault-injection run of the whole
pipeline with a checker, in the spirit of Jepsen and Kafka's system tests.

    .venv/bin/python -m chaos [--quick] [--seed N] [--keep-stack] [--keep-data]
                              [--sink-module services.sink] [--json PATH]

What runs: a private Kafka + PostgreSQL stack (``python -m stack`` with its own directory and
ports, so the broker and the database can be restarted without touching the shared test
stack), the exchange simulator at 60× with 16 (quick) or 60 (full) pairs, and the services as
child processes: backfiller, producer and TWO sinks in one consumer group on a 6-partition
topic. A controller injects the seeded schedule of ``chaos.faults`` (kill -9 of every
service incl. a sink take-over, broker and database restarts, 429 storms, 5xx bursts, WS
drops / stalls / skipped / duplicated / malformed frames, garbage records in the topic) on top
of data faults present from the start (exchange-empty ranges, corrected candles, a missing and
a corrupt archive file).

While it runs, a sampler checks every second that ``sync_state`` never decreases and that no
committed offset of the sink group is ahead of the database. Afterwards the run waits for
quiescence and the checker compares the database with the simulator's truth for every candle
closed by the end of the fault phase (0 missing, 0 extra, 0 wrong; rows written later may not
be extra or wrong either), audits every record of the topic against the truth, accounts for
every malformed input (DLQ), looks for crash loops, 418s and secrets in the logs, prints the
tables and exits 1 on any violation (2 when the run itself could not be set up).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import random
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import psycopg
import yaml

from chaos.check import (
    TopicAudit,
    Verdict,
    audit_topic,
    crash_loop,
    render_table,
    rest_row_value,
)
from chaos.faults import (
    ALL_KINDS,
    KAFKA_RESTART,
    KILL,
    PG_RESTART,
    SIM_WINDOWS,
    TAKEOVER,
    TOPIC_GARBAGE,
    DataFaults,
    Fault,
    Profile,
    count_by_kind,
    plan_data_faults,
    plan_faults,
    profile_for,
    sim_patch,
)
from chaos.io import (
    QUIET,
    REPO,
    ChaosStack,
    Fleet,
    Sampler,
    ServiceSpec,
    TopicReader,
    fully_in_sync,
    high_watermarks,
    partition_leader,
    read_dlq,
    say,
)
from qryptify import db
from qryptify.avro import KlineCodec
from qryptify.config import KafkaConfig
from qryptify.kafka import ensure_topics, make_producer
from qryptify.kline import Kline
from qryptify.pairs import Pair, align_open, ceil_open, close_time
from sim.check import CheckReport, PairReport, compare_db_with_truth, fetch_truth, format_report
from sim.symbols import parse_time_ms
from stack.kafka import wait_kafka
from stack.postgres import check_dsn
from stack.procs import port_open
from stack.supervisor import alive_check
from tests.support.processes import SimProcess, clean_env, poll_until

SPEED = 60.0
PARTITIONS = 6
#: Stays the same across runs: the private cluster is initialised with it once.
DB_PASSWORD = "chaos/Secret-4471@pw"  # noqa: S105 - a throwaway local cluster's password
SIM_START = "2024-07-12T12:00:00Z"
#: The symbol that lists during the history (see ``symbol_docs``).
LATE_LISTED = "CH001USDT"


@dataclass(frozen=True, slots=True)
class Shape:
    """Everything besides the fault schedule that differs between quick and full."""

    symbols: int
    extra: tuple[tuple[str, int], ...]  # (interval, how many symbols also have it)
    history_start: str
    corrected: int
    quiesce_s: float
    stack_dir: str
    kafka_port: int
    pg_port: int


SHAPES: dict[str, Shape] = {
    "quick": Shape(
        12, (("5m", 2), ("15m", 2)), "2024-07-11", 3, 180.0, ".stack-chaos-quick", 39192, 35532
    ),
    "full": Shape(
        48, (("5m", 8), ("15m", 4)), "2024-07-09", 8, 420.0, ".stack-chaos", 39092, 35432
    ),
}


def symbol_docs(count: int, history_start_ms: int) -> list[dict[str, Any]]:
    """The simulator's symbols: varied precisions and activity; one lists mid-history and one
    trades so rarely that some minutes have no trade at all."""
    docs = []
    for i in range(count):
        docs.append(
            {
                "symbol": f"CH{i:03d}USDT",
                "onboard": "2021-01-01T00:00:00Z",
                "price_precision": 2 + i % 4,
                "quantity_precision": i % 3,
                "base_price": round(0.5 + (i * 37) % 300 + i / 7, 4),
                "volume_per_minute": 1000.0 + 137 * i,
                "trades_per_minute": 2 if i == 2 else 20 + (i * 13) % 400,
                "seed": 1000 + i,
            }
        )
    # CH001 lists a day and a bit into the history: the backfiller must start at its listing.
    assert docs[1]["symbol"] == LATE_LISTED  # noqa: S101 - two names for one symbol
    docs[1]["onboard"] = history_start_ms + 86_400_000 + 3 * 3_600_000 + 17 * 60_000
    return docs


def run_pairs(shape: Shape) -> list[Pair]:
    pairs = [Pair(f"CH{i:03d}USDT", "1m") for i in range(shape.symbols)]
    for interval, count in shape.extra:
        pairs += [Pair(f"CH{i:03d}USDT", interval) for i in range(count)]
    return pairs


@dataclass
class Injected:
    """What the controller actually did (the table's "injected" column and notes)."""

    counts: Counter[str] = field(default_factory=Counter)
    kills: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    garbage: list[tuple[int, int]] = field(default_factory=list)  # (partition, offset)
    infra_s: list[tuple[str, float]] = field(default_factory=list)
    takeover: tuple[str, float, float] | None = None  # sink, wall time killed, down s
    errors: list[str] = field(default_factory=list)


class Controller:
    """Executes the fault schedule against the running pipeline."""

    def __init__(
        self,
        faults: Sequence[Fault],
        fleet: Fleet,
        sim: SimProcess,
        stack: ChaosStack,
        kafka: KafkaConfig,
        pairs: Sequence[Pair],
        seed: int,
    ) -> None:
        self.faults = faults
        self.fleet = fleet
        self.sim = sim
        self.stack = stack
        self.kafka = kafka
        self.pairs = pairs
        self.rng = random.Random(seed ^ 0x5EED)  # noqa: S311 - choices, not cryptography
        self.done = Injected()
        self._threads: list[threading.Thread] = []

    def run(self, t0: float) -> None:
        """Execute the schedule; ``t0`` (monotonic) is the phase's second 0."""
        events: list[tuple[float, int, str, Fault]] = []
        for i, f in enumerate(self.faults):
            events.append((f.at_s, i, "start", f))
            if f.kind in SIM_WINDOWS:
                events.append((f.end_s, i, "end", f))
        events.sort(key=lambda e: (e[0], e[1]))
        for at_s, _i, what, fault in events:
            delay = t0 + at_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            try:
                self._apply(fault, what)
            except Exception as exc:  # noqa: BLE001 - recorded; the checker reports it
                self.done.errors.append(f"{fault.describe()} ({what}): {exc}")
                say(f"fault {fault.describe()} failed: {exc}")
        for thread in self._threads:
            thread.join(timeout=600)

    def _apply(self, f: Fault, what: str) -> None:
        if what == "end":
            patch = sim_patch(f, on=False)
            if patch:
                self.sim.set_faults(**patch)
            return
        say(f"inject {f.describe()}")
        if f.kind in SIM_WINDOWS:
            self.sim.set_faults(**sim_patch(f, on=True))
            self.done.counts[f.kind] += 1
        elif f.kind in (KILL, TAKEOVER):
            assert f.target is not None  # noqa: S101 - the planner always names one
            if self.fleet.kill9(f.target, f.duration_s):
                self.done.counts[f.kind] += 1
                self.done.kills[f.target] += 1
                if f.kind == TAKEOVER:
                    self.done.takeover = (f.target, time.time(), f.duration_s)
            else:
                self.done.notes.append(f"{f.describe()}: {f.target} was not running")
        elif f.kind in (KAFKA_RESTART, PG_RESTART):
            thread = threading.Thread(target=self._infra, args=(f,), daemon=True)
            thread.start()
            self._threads.append(thread)
        elif f.kind == TOPIC_GARBAGE:
            self._garbage(int(f.value))
            self.done.counts[f.kind] += 1

    def _infra(self, f: Fault) -> None:
        name = "kafka" if f.kind == KAFKA_RESTART else "postgres"
        started = time.monotonic()
        if name == "kafka" and self.stack.brokers > 1:
            self._cluster_fault(f, started)
            return
        try:
            if f.mode == "restart":
                self.stack.restart(name)
            else:
                sig = signal.SIGKILL if name == "kafka" else signal.SIGQUIT
                self.stack.signal(name, sig)
                time.sleep(2)
                # Back means ready as the stack defines it (stack.kafka, stack.postgres).
                settings = self.stack.settings()
                if name == "kafka":
                    alive = alive_check(settings, name)
                    wait_kafka(settings.bootstrap, settings.kafka_port, alive, 240)
                else:
                    check_dsn(settings.effective_dsn, 240)
        except Exception as exc:  # noqa: BLE001 - recorded and reported
            self._infra_failed(f, f"{name} {f.mode}", exc)
            return
        self._infra_done(f, f"{name} {f.mode}", started, "back")

    def _infra_failed(self, f: Fault, what: str, exc: Exception) -> None:
        self.done.errors.append(f"{f.describe()}: {exc}")
        say(f"{what} failed: {exc}")

    def _infra_done(self, f: Fault, what: str, started: float, state: str) -> None:
        took = time.monotonic() - started
        self.done.counts[f.kind] += 1
        self.done.infra_s.append((what, took))
        say(f"{what}: {state} after {took:.1f}s")

    def _cluster_fault(self, f: Fault, started: float) -> None:
        """A broker fault on the three-node cluster: kill -9 of the leader of the topic's
        partition 0 or of the active controller (or of a node chosen at random), or a rolling
        restart; done when every node is back and every partition fully in sync again."""
        stack, topic = self.stack, self.kafka.topic
        what = f.mode or "?"
        try:
            if f.mode == "rolling":
                for node_id in range(1, stack.brokers + 1):
                    stack.restart(stack.kafka_program(node_id))
                    self._wait_in_sync(f"after restarting node {node_id}")
                what = f"rolling restart of {stack.brokers} nodes"
            else:
                if f.mode == "leader_kill9":
                    node_id = partition_leader(stack.bootstrap, topic)
                elif f.mode == "controller_kill9":
                    node_id = stack.active_controller()
                else:
                    node_id = self.rng.randint(1, stack.brokers)
                program = stack.kafka_program(node_id)
                pid = stack.signal(program, signal.SIGKILL)
                what = f"{f.mode} (node {node_id})"
                # Back means: a new process, listening, and every partition in sync again (a
                # check right after the kill would still see the dead node's registration).
                if not poll_until(lambda: stack.restarted(program, pid), 240, 0.5):
                    raise RuntimeError(f"{program} was not restarted")
                node_port = stack.kafka_port + node_id - 1
                if not poll_until(lambda: port_open(node_port), 240, 0.5):
                    raise RuntimeError(f"{program} does not listen on {node_port}")
                self._wait_in_sync(f"after {what}")
        except Exception as exc:  # noqa: BLE001 - recorded and reported
            self._infra_failed(f, f"kafka {what}", exc)
            return
        self._infra_done(f, f"kafka {what}", started, "cluster back in sync")

    def _wait_in_sync(self, when: str) -> None:
        if not poll_until(
            lambda: fully_in_sync(self.stack.bootstrap, self.kafka.topic, self.stack.brokers),
            240,
            1.0,
        ):
            raise RuntimeError(f"partitions not back in sync {when}")

    def _garbage(self, count: int) -> None:
        """Records the sink must refuse: bytes that are no Avro, a truncated record, a candle
        that breaks the OHLC rule, a valid candle under another pair's key."""
        codec = KlineCodec()
        a, b = self.rng.sample(list(self.pairs), 2)
        open_time = align_open(a.interval, parse_time_ms(SIM_START) - 86_400_000)

        def candle(pair: Pair, high: str, low: str) -> Kline:
            end = close_time(pair.interval, open_time)
            return Kline(pair.symbol, pair.interval, open_time, end, "1.5", high, low, "1.5",
                         "10", "15", 3, "5", "7.5", "rest", open_time)  # fmt: skip

        values = [
            b"chaos: not an Avro record",
            codec.encode(candle(a, "2", "1"))[:-4],
            codec.encode(candle(a, "1", "2")),
            codec.encode(candle(b, "2", "1")),
        ][:count]
        producer = make_producer(self.kafka, **QUIET)
        delivered: list[tuple[int, int]] = []

        def on_delivery(err: Any, msg: Any) -> None:
            if err is None:
                delivered.append((msg.partition(), msg.offset()))
            else:
                self.done.errors.append(f"garbage not delivered: {err}")

        for value in values:
            producer.produce(self.kafka.topic, key=a.key.encode(), value=value,
                             on_delivery=on_delivery)  # fmt: skip
        producer.flush(120)
        self.done.garbage.extend(delivered)


# -- the run ------------------------------------------------------------------------------------


@dataclass
class Outcome:
    verdicts: list[Verdict]
    fault_rows: list[list[str]]
    seconds: float
    details: dict[str, Any]

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.verdicts)


def service_config(
    path: Path,
    pairs: Sequence[Pair],
    sim: SimProcess,
    kafka: KafkaConfig,
    dsn: str,
    group: str,
    history_start: str,
    cache: Path,
) -> None:
    doc = {
        "pairs": [str(p) for p in pairs],
        "rest": {"endpoint": sim.url, "timeout_s": 10, "time_sync_every_s": 5},
        "ws": {
            "endpoint": f"{sim.ws_url}/market/stream",
            "watchdog_grace_ms": 5000,
            "stale_min_wall_s": 1.5,
            "connect_spacing_ms": 50,
            "reconnect_initial_s": 0.05,
            "reconnect_max_s": 1.0,
        },
        "db": {"dsn": dsn},
        "kafka": kafka.model_dump(mode="json"),
        "archive": {"endpoint": sim.url, "enabled": True, "cache_dir": str(cache)},
        "backfill": {"start_date": history_start, "recheck_every_s": 10, "exit_when_done": False},
        "sink": {"group_id": group, "max_latency_ms": 200},
        "metrics": {"port": 0},
        "log": {"level": "INFO", "format": "json"},
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o600)


def takeover_seen(log: Path, killed_wall: float, down_s: float) -> str | None:
    """The other sink's "assigned partitions" line while the killed one was down."""
    if not log.exists():
        return None
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        with contextlib.suppress(ValueError, KeyError):
            doc = json.loads(line)
            if not str(doc["msg"]).startswith("assigned partitions"):
                continue
            at = datetime.fromisoformat(doc["ts"]).timestamp()
            if killed_wall + 5 < at < killed_wall + down_s + 2:
                return f"{doc['msg']} {at - killed_wall:.0f}s after the kill"
    return None


def secret_forms(secret: str) -> set[str]:
    return {secret, quote(secret, safe=""), quote(secret), quote_plus(secret)}


def scan_logs(paths: Sequence[Path], secrets: set[str]) -> list[str]:
    found = []
    for path in paths:
        text = path.read_text(errors="replace")
        for s in secrets:
            if s in text:
                found.append(f"{path.name}: {s!r}")
    return found


def run(args: argparse.Namespace) -> int:
    profile: Profile = profile_for("quick" if args.quick else "full", args.brokers)
    shape = SHAPES[profile.name]
    seed: int = args.seed
    started = time.monotonic()
    faults = plan_faults(seed, profile)
    pairs = run_pairs(shape)
    history_ms = parse_time_ms(shape.history_start)
    sim_start_ms = parse_time_ms(SIM_START)
    data = plan_data_faults(
        seed, pairs, history_ms, sim_start_ms, faults, profile, shape.corrected, SPEED,
        late_listed=(LATE_LISTED,),
    )  # fmt: skip
    run_id = f"{profile.name}-s{seed}-{uuid.uuid4().hex[:6]}"
    stack = ChaosStack(
        REPO / (shape.stack_dir + ("" if args.brokers == 1 else f"-b{args.brokers}")),
        args.kafka_port or shape.kafka_port,
        args.pg_port or shape.pg_port,
        DB_PASSWORD,
        args.brokers,
    )
    run_dir = stack.stack_dir / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    say(f"run {run_id}: {len(pairs)} pairs, {profile.total_kills} kills, {len(faults)} faults "
        f"over {profile.duration_s:.0f}s, seed {seed}; logs in {run_dir}")  # fmt: skip
    (run_dir / "schedule.txt").write_text("\n".join(f.describe() for f in faults) + "\n")
    timer = time.monotonic()
    with contextlib.ExitStack() as cleanup:  # undone in reverse order, whatever happens
        stack.up()
        if not args.keep_stack:
            cleanup.callback(stack.down)
        say(f"stack up in {time.monotonic() - timer:.0f}s (kafka {stack.bootstrap}, postgres "
            f"127.0.0.1:{stack.pg_port})")  # fmt: skip
        base = f"chaos-{run_id}"
        kafka = KafkaConfig(
            bootstrap_servers=stack.bootstrap,
            topic=f"{base}.klines",
            offsets_topic=f"{base}.offsets",
            dlq_topic=f"{base}.dlq",
            partitions=PARTITIONS,
            linger_ms=5,
        )
        db_name = base.replace("-", "_")
        outcome: Outcome | None = None

        def drop_data() -> None:
            if outcome is not None and outcome.ok and not args.keep_data:
                with contextlib.suppress(Exception):
                    db.drop_database(stack.admin_dsn(), db_name)
                with contextlib.suppress(Exception):
                    delete_topics(kafka)

        cleanup.callback(drop_data)
        ensure_topics(kafka)
        db.create_database(stack.admin_dsn(), db_name)
        dsn = stack.admin_dsn(db_name)
        with db.connect(dsn) as conn:
            db.migrate(conn)
        symbols = run_dir / "symbols.yaml"
        symbols.write_text(yaml.safe_dump({"symbols": symbol_docs(shape.symbols, history_ms)}))
        sim_faults = run_dir / "sim-faults.json"
        sim_faults.write_text(json.dumps(data.start_faults(seed)))
        sim = SimProcess(
            run_dir / "sim.log",
            "--speed", str(SPEED), "--start", SIM_START, "--symbols", str(symbols), "--faults",
            str(sim_faults), "--seed", str(seed),
            env=clean_env(), append=True, new_session=True, timeout_s=60,
        )  # fmt: skip
        cleanup.callback(sim.stop, 20)
        group = f"{base}-sink"
        config = run_dir / "config.yaml"
        service_config(config, pairs, sim, kafka, dsn, group, shape.history_start,
                       run_dir / "archive-cache")  # fmt: skip
        specs = [
            ServiceSpec("backfiller", "services.backfiller"),
            ServiceSpec("producer", "services.producer"),
            ServiceSpec("sink-a", args.sink_module, sink_env(args, f"{base}-a")),
            ServiceSpec("sink-b", args.sink_module, sink_env(args, f"{base}-b")),
        ]
        clock0 = time.monotonic()
        reader = TopicReader(kafka, f"{base}-reader", PARTITIONS)
        cleanup.callback(reader.stop)
        sampler = Sampler(kafka, group, PARTITIONS, dsn, reader, clock0)
        cleanup.callback(sampler.stop)
        fleet = Fleet(specs, config, run_dir, clock0)
        cleanup.callback(fleet.stop_all, 10)
        controller = Controller(faults, fleet, sim, stack, kafka, pairs, seed)
        details: dict[str, Any] = {"run_id": run_id, "seed": seed, "profile": profile.name}
        fleet.start_all()
        reader.start()
        sampler.start()
        t0 = time.monotonic()
        phase_ms = sim.clock_ms()
        sim.set_faults(**data.live_patch(phase_ms, SPEED))
        live_empty, corrected = data.live_times(phase_ms, SPEED)
        details["live_empty_range"] = live_empty
        details["corrected"] = corrected
        say("services started; fault phase begins")
        controller.run(t0)
        outcome = finish(args, profile, shape, faults, data, pairs, stack, sim, fleet, reader,
                         sampler, controller, kafka, dsn, run_dir, started, details)  # fmt: skip
    report(outcome, profile, seed, run_dir, args)
    return 0 if outcome.ok else 1


def sink_env(args: argparse.Namespace, instance: str) -> dict[str, str]:
    """Static membership (KIP-345) only when asked: the default is how the stack and the
    compose file run sinks (dynamic members)."""
    return {"QRYPTIFY_SINK_INSTANCE_ID": instance} if args.static_membership else {}


def delete_topics(kafka: KafkaConfig) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers, **QUIET})
    futures = admin.delete_topics([kafka.topic, kafka.offsets_topic, kafka.dlq_topic])
    for future in futures.values():
        with contextlib.suppress(Exception):
            future.result(30)


def finish(
    args: argparse.Namespace,
    profile: Profile,
    shape: Shape,
    faults: Sequence[Fault],
    data: DataFaults,
    pairs: Sequence[Pair],
    stack: ChaosStack,
    sim: SimProcess,
    fleet: Fleet,
    reader: TopicReader,
    sampler: Sampler,
    controller: Controller,
    kafka: KafkaConfig,
    dsn: str,
    run_dir: Path,
    started: float,
    details: dict[str, Any],
) -> Outcome:
    verdicts: list[Verdict] = []
    # Quiescence: faults off, every service up; the exchange clock keeps running (a real
    # exchange never stops), and the checked window ends where the fault phase ended.
    window_end = sim.clock_ms()
    sim.set_faults(
        **{"rest_429_next": 0, "rest_5xx_next": 0}
        | {k: v for f in faults if f.kind in SIM_WINDOWS for k, v in sim_patch(f, on=False).items()}
    )
    fleet_up = poll_until(lambda: fleet.all_up_since(5), 120, 0.5)
    details["stale_replacements"] = (
        fleet.log_path("producer").read_text(errors="replace").count("silent for")
    )
    quiesce_from = time.monotonic()
    say(f"fault phase over at exchange time {window_end}; waiting for convergence")
    history_ms = parse_time_ms(shape.history_start)
    report_db = None
    converged = False
    deadline = time.monotonic() + shape.quiesce_s
    while time.monotonic() < deadline:
        time.sleep(5)
        report_db = compare_window(dsn, sim.url, pairs, history_ms, window_end)
        if report_db.ok:
            converged = True
            break
    quiesce_s = time.monotonic() - quiesce_from
    if report_db is None or not converged:
        report_db = compare_window(dsn, sim.url, pairs, history_ms, window_end)
    say(f"quiescence after {quiesce_s:.0f}s: {'converged' if converged else 'NOT converged'}")
    (run_dir / "db-vs-truth.txt").write_text(format_report(report_db, details=20) + "\n")
    codes = fleet.stop_all(60)
    stopped_ms = sim.clock_ms()
    # Rows written after the window (the pipeline kept running): none may be extra or wrong;
    # the tail may miss what was in flight at the stop.
    tail = compare_window(dsn, sim.url, pairs, window_end, stopped_ms, aligned_start=True)
    (run_dir / "db-vs-truth-tail.txt").write_text(format_report(tail, details=20) + "\n")
    marks = high_watermarks(kafka, kafka.topic, PARTITIONS)
    poll_until(lambda: reader.caught_up(marks), 120, 0.5)
    sampler.sample()  # one last look with everything stopped
    sampler.stop()
    reader.stop()
    stats = sim.stats()
    dlq = read_dlq(kafka)
    sink_dlq = {
        (int(h["qryptify.partition"]), int(h["qryptify.offset"]))
        for h in dlq
        if h.get("qryptify.topic") == kafka.topic.encode()
    }
    ws_dlq = sum(1 for h in dlq if h.get("qryptify.source") == b"ws")
    sampler.audit.finish(reader.index, sink_dlq)
    # The topic itself against the truth (invariants 1 and 8): every candle closed by now.
    truth: dict[tuple[str, str], dict[int, int]] = {}
    audit_ms = sim.clock_ms()
    with httpx.Client(base_url=sim.url, timeout=120) as client:
        for pair in pairs:
            rows = fetch_truth(client, pair, history_ms, audit_ms)
            truth[(pair.symbol, pair.interval)] = {int(r[0]): rest_row_value(r) for r in rows}
    corrected: frozenset[tuple[str, str, int]] = frozenset(details["corrected"])
    topic = audit_topic(reader.index, truth, corrected)
    outside = rows_outside(dsn, pairs, history_ms, stopped_ms)
    # -- verdicts ------------------------------------------------------------------------------
    missing = sum(len(p.missing) for p in report_db.pairs)
    tail_extra = sum(len(p.extra) for p in tail.pairs)
    extra = sum(len(p.extra) for p in report_db.pairs) + tail_extra + outside
    tail_wrong = sum(len(p.wrong) for p in tail.pairs)
    wrong = sum(len(p.wrong) for p in report_db.pairs) + tail_wrong
    ignored = sum(len(p.ignored) for p in (*report_db.pairs, *tail.pairs))
    truth_rows = sum(p.truth_rows for p in report_db.pairs)
    converge_detail = f"{quiesce_s:.0f}s after the fault phase; {truth_rows} truth rows"
    verdicts.append(Verdict("converged (quiescence)", converged, converge_detail))
    verdicts.append(Verdict("missing rows", missing == 0, str(missing)))
    verdicts.append(Verdict("extra rows", extra == 0, f"{extra} (after the window: "
                            f"{tail_extra}; outside any pair's range: {outside})"))  # fmt: skip
    verdicts.append(Verdict("wrong rows", wrong == 0, f"{wrong} (after the window: {tail_wrong})"))
    verdicts.append(Verdict("rows inside exchange-empty ranges (fabricated)", ignored == 0,
                            str(ignored)))  # fmt: skip
    verdicts.append(topic_verdict(topic))
    seen = len(topic.corrected_seen)
    verdicts.append(Verdict("corrected candles: WS sent the old value, the DB holds the new",
                            seen >= 1 and wrong == 0,
                            f"{seen} of {len(corrected)} corrected candles reached the topic "
                            f"with the WS value ({topic.corrected_ws} records); wrong rows "
                            f"{wrong}"))  # fmt: skip
    verdicts.append(Verdict("empty-range events = exchange-empty slots", not topic.bad_empty,
                            f"{topic.empty_ranges} events, {len(topic.bad_empty)} covering "
                            "real candles"))  # fmt: skip
    sync = sampler.sync
    verdicts.append(Verdict("sync_state never decreased", not sync.decreases,
                            f"{sync.samples} samples x {len(sync.highest)} pairs, "
                            f"{len(sync.decreases)} decreases"))  # fmt: skip
    audit = sampler.audit
    verdicts.append(Verdict("no committed offset ahead of the DB", not audit.violations,
                            f"{audit.samples} samples, {audit.records} records checked, "
                            f"{len(audit.violations)} violations"))  # fmt: skip
    malformed_sent = int(stats.get("ws_malformed_sent", 0))
    verdicts.append(Verdict("malformed WS frames all in the DLQ", ws_dlq == malformed_sent,
                            f"sent {malformed_sent}, DLQ {ws_dlq}"))  # fmt: skip
    garbage = set(controller.done.garbage)
    extra_dlq = sink_dlq - garbage
    verdicts.append(Verdict("garbage records all in the DLQ, nothing else",
                            garbage <= sink_dlq and not extra_dlq,
                            f"injected {len(garbage)}, DLQ {len(sink_dlq & garbage)}, "
                            f"other {len(extra_dlq)}"))  # fmt: skip
    loops = [s for s in fleet.specs if crash_loop([e for e in fleet.exits if e.service == s])]
    unexpected = Counter(e.service for e in fleet.exits if not e.expected)
    up_text = "all up at the end" if fleet_up else "NOT all up at the end"
    verdicts.append(Verdict("no crash loop", not loops and fleet_up,
                            f"unexpected exits {dict(unexpected) or 0}; {up_text}"))  # fmt: skip
    clean = {n: c for n, c in codes.items() if c != 0}
    verdicts.append(Verdict("clean stop on SIGTERM (exit 0)", not clean, str(clean or "all 0")))
    verdicts.append(Verdict("HTTP 418 from the exchange", int(stats.get("responses_418", 0)) == 0,
                            f"{stats.get('responses_418', 0)} (429s: "
                            f"{stats.get('responses_429', 0)}, 5xx: "
                            f"{stats.get('responses_5xx', 0)})"))  # fmt: skip
    logs = sorted(run_dir.glob("*.log")) + sorted(stack.logs_dir().glob("*.log"))
    leaks = scan_logs(logs, secret_forms(DB_PASSWORD))
    verdicts.append(Verdict("secrets in logs", not leaks, f"{len(logs)} logs scanned; "
                            + (", ".join(leaks) if leaks else "none found")))  # fmt: skip
    done = controller.done
    verdicts.append(Verdict("every planned fault injected", not done.errors and not done.notes,
                            "; ".join(done.errors + done.notes) or "yes"))  # fmt: skip
    # -- the fault table -----------------------------------------------------------------------
    planned = count_by_kind(faults)
    notes = fault_notes(done, stats, fleet, int(details["stale_replacements"]))
    rows = [[k, str(planned[k]), str(done.counts[k]), notes.get(k, "")] for k in ALL_KINDS]
    ranges = [data.history_empty, details["live_empty_range"]]
    backfill_log = fleet.log_path("backfiller").read_text(errors="replace")
    rows += [
        ["empty_range (data)", "2", "2",
         ", ".join(f"{s} {iso(a)}+{(b - a) // 60_000}m" for s, a, b in ranges)
         + f"; {topic.empty_ranges} empty-range events published"],
        ["corrected_candle (data)", str(len(corrected)), str(len(corrected)),
         f"{seen} reached the topic with the WS value first"],
        ["archive_missing (data)", "1", "1",
         archive_note(backfill_log, data.archive_missing[0], "not published")],
        ["archive_corrupt (data)", "1", "1",
         archive_note(backfill_log, data.archive_corrupt[0], "unusable")],
    ]  # fmt: skip
    details.update(
        {
            "seconds": round(time.monotonic() - started, 1),
            "quiesce_s": round(quiesce_s, 1),
            "pairs": len(pairs),
            "truth_rows": truth_rows,
            "topic_records": len(reader.index),
            "sim_stats": stats,
            "exits": [dataclasses.asdict(e) for e in fleet.exits],
            "unexpected_exits": dict(unexpected),
            "infra": done.infra_s,
            "violations_ahead": [repr(v) for v in audit.violations[:20]],
            "sync_decreases": [repr(d) for d in sync.decreases[:20]],
            "topic_not_in_truth": [repr(x) for x in topic.not_in_truth[:20]],
            "topic_wrong": [repr(x) for x in topic.wrong_value[:20]],
        }
    )
    return Outcome(verdicts, rows, time.monotonic() - started, details)


def topic_verdict(topic: TopicAudit) -> Verdict:
    bad = len(topic.not_in_truth) + len(topic.wrong_value)
    return Verdict(
        "topic = exchange's closed candles",
        bad == 0,
        f"{topic.klines} candle records, {len(topic.not_in_truth)} not closed / not on the "
        f"exchange, {len(topic.wrong_value)} with another value",
    )


def compare_window(
    dsn: str,
    sim_url: str,
    pairs: Sequence[Pair],
    start_ms: int,
    end_ms: int,
    *,
    aligned_start: bool = False,
) -> CheckReport:
    """The database against the truth for the candles of each pair closed by ``end_ms``
    (from ``start_ms``, or from the first candle opening at/after it with ``aligned_start``)."""
    reports: list[PairReport] = []
    for interval in sorted({p.interval for p in pairs}):
        group = [p for p in pairs if p.interval == interval]
        start = ceil_open(interval, start_ms) if aligned_start else start_ms
        end = align_open(interval, end_ms)
        if end > start:
            reports += compare_db_with_truth(dsn, sim_url, group, start, end).pairs
    return CheckReport(start_ms, end_ms, tuple(reports))


def rows_outside(dsn: str, pairs: Sequence[Pair], start_ms: int, end_ms: int) -> int:
    """Rows of other pairs, before the history start, or of candles still open at ``end_ms``."""
    ends = [align_open(p.interval, end_ms) for p in pairs]
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM candlesticks c WHERE NOT EXISTS ("
            " SELECT 1 FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS u(s, i, e)"
            " WHERE c.symbol = u.s AND c.interval = u.i"
            " AND c.ts >= TIMESTAMPTZ 'epoch' + %s * INTERVAL '1 millisecond'"
            " AND c.ts < TIMESTAMPTZ 'epoch' + u.e * INTERVAL '1 millisecond')",
            ([p.symbol for p in pairs], [p.interval for p in pairs], ends, start_ms),
        ).fetchone()
    return int(row[0]) if row else 0


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%m-%dT%H:%M")


def archive_note(log: str, name: str, marker: str) -> str:
    hits = sum(1 for line in log.splitlines() if name in line and marker in line)
    return f"{name}: backfiller logged '{marker}' {hits}x, filled from REST"


def fault_notes(done: Injected, stats: dict[str, Any], fleet: Fleet, stale: int) -> dict[str, str]:
    notes = {
        KILL: ", ".join(f"{s} {n}" for s, n in sorted(done.kills.items())),
        KAFKA_RESTART: ", ".join(f"{m} {s:.0f}s" for m, s in done.infra_s if "kafka" in m),
        PG_RESTART: ", ".join(f"{m} {s:.0f}s" for m, s in done.infra_s if "postgres" in m),
        "rest_429_storm": f"sim answered {stats.get('responses_429', 0)} x 429",
        "rest_5xx_burst": f"sim answered {stats.get('responses_5xx', 0)} x 5xx",
        "ws_drop": f"{stats.get('ws_drops', 0)} connections dropped",
        "ws_stall": f"producer replaced a silent connection {stale}x",
        "ws_skip_closes": "closes skipped: the watchdog fetched them by REST",
        "ws_duplicate_closes": f"{stats.get('ws_closed_frames_sent', 0)} x:true frames sent",
        "ws_malformed_frames": f"{stats.get('ws_malformed_sent', 0)} malformed frames sent",
        TOPIC_GARBAGE: f"{len(done.garbage)} records",
    }
    if done.takeover is not None:
        sink, killed, down = done.takeover
        other = "sink-b" if sink == "sink-a" else "sink-a"
        seen = takeover_seen(fleet.log_path(other), killed, down)
        notes[TAKEOVER] = f"{sink} down {down:.0f}s; " + (
            f"{other}: {seen}" if seen else f"{other} took over: NOT SEEN in its log"
        )
    return notes


def report(outcome: Outcome, profile: Profile, seed: int, run_dir: Path, args: Any) -> None:
    faults = render_table(["fault", "planned", "injected", "notes"], outcome.fault_rows, False)
    results = render_table(
        ["check", "result", "detail"],
        [[v.check, "ok" if v.ok else "VIOLATION", v.detail] for v in outcome.verdicts],
        False,
    )
    head = (
        f"chaos {profile.name} run, seed {seed}: {outcome.seconds / 60:.1f} min wall "
        f"({outcome.details.get('quiesce_s', 0):.0f}s quiescence), "
        f"{outcome.details.get('pairs')} pairs, {outcome.details.get('topic_records')} records"
    )
    verdict = "PASS" if outcome.ok else "FAIL"
    text = f"{head}\n\nFaults injected\n{faults}\n\nResults\n{results}\n\n{verdict}\n"
    print("\n" + text, flush=True)
    md = (
        f"{head}\n\n"
        + render_table(["fault", "planned", "injected", "notes"], outcome.fault_rows, True)
        + "\n\n"
        + render_table(
            ["check", "result", "detail"],
            [[v.check, "ok" if v.ok else "**VIOLATION**", v.detail] for v in outcome.verdicts],
            True,
        )
        + f"\n\n{verdict}\n"
    )
    (run_dir / "report.txt").write_text(text)
    (run_dir / "report.md").write_text(md)
    doc = {
        **outcome.details,
        "ok": outcome.ok,
        "verdicts": [v.__repr__() for v in outcome.verdicts],
    }
    (run_dir / "report.json").write_text(json.dumps(doc, indent=2, default=str))
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2, default=str))


def _env_port(name: str) -> int | None:
    """A port from the environment (several chaos runs on one machine need their own)."""
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise SystemExit(f"chaos: {name}={value!r} is not a port number")
    return int(value)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the short variant (make test)")
    parser.add_argument("--seed", type=int, default=20240712)
    parser.add_argument("--keep-stack", action="store_true", help="leave the chaos stack up")
    parser.add_argument("--keep-data", action="store_true", help="keep the topics and database")
    parser.add_argument(
        "--sink-module", default="services.sink", help="the sink's module (a patched copy)"
    )
    parser.add_argument("--json", default=None, help="also write the report as JSON here")
    parser.add_argument(
        "--static-membership",
        action="store_true",
        help="give each sink a QRYPTIFY_SINK_INSTANCE_ID (KIP-345 static membership)",
    )
    parser.add_argument(
        "--brokers",
        type=int,
        choices=(1, 3),
        default=1,
        help="Kafka nodes; 3 adds kill -9 of a partition leader and of the active controller "
        "and a rolling restart",
    )
    parser.add_argument("--plan", action="store_true", help="print the schedule and exit")
    parser.add_argument(
        "--kafka-port",
        type=int,
        default=_env_port("QRYPTIFY_CHAOS_KAFKA_PORT"),
        help="the chaos stack's broker port (controller: +1); default $QRYPTIFY_CHAOS_KAFKA_PORT, "
        "else 39192 quick / 39092 full",
    )
    parser.add_argument(
        "--pg-port",
        type=int,
        default=_env_port("QRYPTIFY_CHAOS_PG_PORT"),
        help="the chaos stack's PostgreSQL port; default $QRYPTIFY_CHAOS_PG_PORT, "
        "else 35532 quick / 35432 full",
    )
    args = parser.parse_args(argv)
    if args.plan:
        profile = profile_for("quick" if args.quick else "full", args.brokers)
        for f in plan_faults(args.seed, profile):
            print(f.describe())
        return 0

    def terminate(signum: int, _frame: object) -> None:
        # Unwinds run(): its cleanups stop the services, the simulator and the stack.
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - the run could not be carried out: exit 2
        import traceback

        traceback.print_exc()
        print(f"chaos: the run could not be carried out: {exc}", flush=True)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
