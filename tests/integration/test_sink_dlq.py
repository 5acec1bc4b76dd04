"""Invariant 6: undecodable and invalid records go to the DLQ with their reason and origin, and
the partition keeps flowing past them."""

from __future__ import annotations

import threading

from qryptify.avro import SOE_MAGIC, KlineCodec
from qryptify.config import Config
from qryptify.kafka import headers_dict
from tests.conftest import T0, make_kline
from tests.integration.sink_helpers import (
    LoopThread,
    caught_up,
    expected_rows,
    make_loop,
    produce_raw,
    read_topic,
    series,
    table_rows,
)
from tests.support.processes import wait_until


def test_bad_records_land_in_the_dlq_and_the_partition_keeps_flowing(app_config: Config) -> None:
    codec = KlineCodec()
    before = series([("BTCUSDT", "1m")], 20)
    after = series([("BTCUSDT", "1m")], 20, start=T0 + 20 * 60_000)
    good = codec.encode(before[0])
    bad_ohlc = make_kline("BTCUSDT", "1m", T0 + 99 * 60_000, high="1.0", low="0.5")
    bad_close = make_kline("BTCUSDT", "1m", T0 + 98 * 60_000, close_time=T0 + 98 * 60_000 + 5)
    key = b"BTCUSDT|1m"
    bad = {
        b"garbage \xff\xfe not avro": "undecodable record: unknown framing",
        SOE_MAGIC + bytes.fromhex("0123456789abcdef") + good[10:]: "unknown schema fingerprint",
        codec.encode(bad_ohlc): "OHLC violates",
        codec.encode(bad_close): "close_time",
        good[:-3]: "does not decode",
    }
    items = [(key, codec.encode(k)) for k in before]
    items += [(key, value) for value in bad]
    items += [(key, codec.encode(k)) for k in after]
    produce_raw(app_config.kafka, items)

    runner = LoopThread(make_loop(app_config, threading.Event(), batch_size=7)).start()
    wait_until(caught_up(app_config.kafka, app_config.sink.group_id), 60, "sink to pass them")
    assert runner.stop() == 0
    assert runner.loop.totals["dlq"] == len(bad)

    assert table_rows(app_config.db.dsn.get_secret_value()) == expected_rows(before + after)
    dlq = read_topic(app_config.kafka, app_config.kafka.dlq_topic, len(bad))
    assert len(dlq) == len(bad)
    offsets = [20 + i for i in range(len(bad))]
    for msg, (value, reason), offset in zip(dlq, bad.items(), offsets, strict=True):
        headers = headers_dict(msg)
        assert msg.value() == value
        assert msg.key() == key
        assert reason in headers["qryptify.reason"].decode(), headers
        assert headers["qryptify.topic"].decode() == app_config.kafka.topic
        assert int(headers["qryptify.offset"]) == offset
        partition = int(headers["qryptify.partition"])
        assert 0 <= partition < app_config.kafka.partitions
        assert headers["qryptify.error_class"] in (b"UndecodableRecord", b"InvalidKline")
