"""``qryptify tap``: print the decoded kline stream.

By default the tap joins no group: it assigns every partition itself and never commits, so it
leaves no trace on the cluster. ``--group NAME`` consumes as that group instead and commits what
it printed (a resumable tap). See docs/consumers.md for decoding the topic in other programs.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from qryptify.avro import KlineCodec
from qryptify.commands.replay import REPLAY_GROUP_PREFIX
from qryptify.config import Config
from qryptify.errors import ConfigError, IngestorError, PairError, UndecodableRecord
from qryptify.futures import tap as futures_tap
from qryptify.futures.funding import FundingRate
from qryptify.futures.price import PriceEmptyRange, PriceKline
from qryptify.futures.records import FuturesRecord
from qryptify.kafka import KafkaError, TopicPartition, make_consumer, topic_partitions
from qryptify.kline import EmptyRange, Event, Kline
from qryptify.pairs import Pair, parse_pair
from qryptify.service import install_stop_handlers
from qryptify.sink.batch import offsets_to_commit

FORMATS = ("table", "json", "csv")
#: librdkafka logical offsets.
OFFSET_BEGINNING, OFFSET_END = -2, -1

CSV_FIELDS = (
    "type", "symbol", "interval", "open_time", "close_time", "open", "high", "low", "close",
    "volume", "quote_volume", "trades", "taker_buy_base", "taker_buy_quote", "source",
    "ingested_at", "start_time", "end_time", "partition", "offset",
)  # fmt: skip
_TABLE = "{:<24} {:<16} {:>14} {:>14} {:>14} {:>14} {:>16} {:>8} {:<7} {:>12}"
TABLE_HEADER = _TABLE.format(
    "open_time (UTC)",
    "pair",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "trades",
    "source",
    "p@offset",
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("tap", help="print the decoded kline stream", description=__doc__)
    parser.add_argument(
        "--pair",
        action="append",
        default=[],
        metavar="PAIR",
        help="only this pair (BTCUSDT/1m); repeat or comma-separate for several",
    )
    parser.add_argument(
        "--from-beginning", action="store_true", help="start at the oldest record (default: now)"
    )
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format")
    parser.add_argument(
        "--group", default=None, help="consume as this group and commit (default: no group)"
    )
    parser.add_argument("--limit", type=int, default=None, help="stop after printing N records")
    parser.add_argument(
        "--exit-at-end", action="store_true", help="stop once every partition is caught up"
    )
    parser.add_argument(
        "--futures",
        action="store_true",
        help="tap the futures topic (funding, mark/index/premium klines; --pair: by symbol)",
    )
    parser.set_defaults(run=run)


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def event_fields(event: Event | FuturesRecord, partition: int, offset: int) -> dict[str, Any]:
    if isinstance(event, FundingRate | PriceKline | PriceEmptyRange):
        return futures_tap.fields(event, partition, offset)
    if isinstance(event, Kline):
        fields: dict[str, Any] = {"type": "kline"}
        fields.update({name: getattr(event, name) for name in Kline.__slots__})
    else:
        fields = {"type": "empty_range"}
        fields.update({name: getattr(event, name) for name in EmptyRange.__slots__})
    fields["partition"] = partition
    fields["offset"] = offset
    return fields


def format_table(event: Event | FuturesRecord, partition: int, offset: int) -> str:
    if isinstance(event, FundingRate | PriceKline | PriceEmptyRange):
        return futures_tap.table_line(event, partition, offset)
    where = f"{partition}@{offset}"
    if isinstance(event, Kline):
        return _TABLE.format(
            iso_ms(event.open_time),
            f"{event.symbol}/{event.interval}",
            event.open,
            event.high,
            event.low,
            event.close,
            event.volume,
            event.trades,
            event.source,
            where,
        )
    return (
        f"{iso_ms(event.start_time):<24} {event.symbol}/{event.interval:<8} "
        f"empty until {iso_ms(event.end_time)} (exchange-confirmed)  {where}"
    )


class Printer:
    """Writes events in one of FORMATS; CSV and table print their header once."""

    def __init__(self, fmt: str, out: TextIO, *, futures: bool = False) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}")
        self.fmt = fmt
        self.out = out
        self._started = False
        self.csv_fields = futures_tap.CSV_FIELDS if futures else CSV_FIELDS
        self.table_header = futures_tap.TABLE_HEADER if futures else TABLE_HEADER

    def line(self, event: Event | FuturesRecord, partition: int, offset: int) -> str:
        if self.fmt == "json":
            return json.dumps(event_fields(event, partition, offset), separators=(",", ":"))
        if self.fmt == "csv":
            buf = io.StringIO()
            fields = event_fields(event, partition, offset)
            csv.writer(buf, lineterminator="").writerow(
                [fields.get(f, "") for f in self.csv_fields]
            )
            return buf.getvalue()
        return format_table(event, partition, offset)

    def print(self, event: Event | FuturesRecord, partition: int, offset: int) -> None:
        if not self._started:
            self._started = True
            if self.fmt == "csv":
                self.out.write(",".join(self.csv_fields) + "\n")
            elif self.fmt == "table":
                self.out.write(self.table_header + "\n")
        self.out.write(self.line(event, partition, offset) + "\n")


def parse_filter(values: Sequence[str], configured: Sequence[Pair] | None = None) -> set[bytes]:
    """Keys of the pairs to show; each must be one of ``configured`` when that is given."""
    keys: set[bytes] = set()
    for value in values:
        for item in value.split(","):
            if not item.strip():
                continue
            try:
                pair = parse_pair(item)
            except PairError as exc:
                raise ConfigError("--pair", item, exc.reason) from None
            if configured is not None and pair not in configured:
                shown = ", ".join(str(p) for p in configured) or "none"
                raise ConfigError("--pair", item, f"not a configured pair (pairs: {shown})")
            keys.add(pair.key.encode())
    return keys


#: The sink's default group (refused even when the config names another one).
PIPELINE_GROUP = "qryptify-sink"


def check_tap_group(group: str | None, cfg: Config) -> None:
    """Refuse a pipeline service's group: a tap committing there would move the group past
    records the sink (or a replay) has not written, and they would never reach the database."""
    if group is None:
        return
    if group in (cfg.sink.group_id, PIPELINE_GROUP):
        raise ConfigError(
            "--group", group, "is the sink's consumer group; a tap must use a group of its own"
        )
    if group.startswith(REPLAY_GROUP_PREFIX):
        raise ConfigError(
            "--group", group, "is a replay's consumer group; a tap must use a group of its own"
        )


def run(args: argparse.Namespace, cfg: Config) -> int:
    check_tap_group(args.group, cfg)
    keys = parse_filter(args.pair, cfg.pairs or None)  # no pairs configured: any pair
    futures = bool(getattr(args, "futures", False))
    if futures:  # futures keys are SYMBOL|kind…: --pair filters by its symbol
        keys = {key.split(b"|", 1)[0] for key in keys}
    topic = cfg.futures.topic if futures else cfg.kafka.topic
    overrides: dict[str, Any] = {
        "auto.offset.reset": "earliest" if args.from_beginning else "latest",
        "enable.partition.eof": True,
    }
    consumer = make_consumer(
        cfg.kafka, args.group or f"qryptify-tap-{uuid.uuid4().hex}", **overrides
    )
    try:
        partitions = topic_partitions(consumer, topic, cfg.kafka.bootstrap_servers)
    except IngestorError:
        consumer.close()
        raise
    if args.group:
        consumer.subscribe([topic])
    else:
        start = OFFSET_BEGINNING if args.from_beginning else OFFSET_END
        consumer.assign([TopicPartition(topic, p, start) for p in partitions])
    stop = threading.Event()
    install_stop_handlers(stop)
    codec = KlineCodec()
    printer = Printer(args.format, sys.stdout, futures=futures)
    at_end: set[int] = set()
    printed = 0
    try:
        while not stop.is_set():
            messages = consumer.consume(num_messages=500, timeout=0.5)
            good = []
            for msg in messages:
                err = msg.error()
                partition, offset = msg.partition() or 0, msg.offset() or 0
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        at_end.add(partition)
                    else:
                        print(f"tap: kafka: {err.str()}", file=sys.stderr)
                    continue
                at_end.discard(partition)
                good.append(msg)
                raw_key = msg.key()
                rkey = raw_key.encode() if isinstance(raw_key, str) else raw_key or b""
                if keys and (rkey.split(b"|", 1)[0] if futures else rkey) not in keys:
                    continue
                try:
                    event: Event | FuturesRecord = (
                        futures_tap.decode(codec.avro, msg.value() or b"")
                        if futures
                        else codec.decode(msg.value() or b"")
                    )
                except UndecodableRecord as exc:
                    print(f"tap: {partition}@{offset}: {exc}", file=sys.stderr)
                    continue
                printer.print(event, partition, offset)
                printed += 1
                if args.limit is not None and printed >= args.limit:
                    stop.set()
                    break
            sys.stdout.flush()
            if args.group and good:
                commit = [TopicPartition(t, p, o) for (t, p), o in offsets_to_commit(good).items()]
                consumer.commit(offsets=commit, asynchronous=False)
            if args.exit_at_end and at_end >= set(partitions):
                break
    except BrokenPipeError:  # `qryptify tap | head`: the reader is gone; exit quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        consumer.close()
    return 0
