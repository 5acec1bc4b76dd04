"""The offsets topic holds source offsets and the handoff marks side by side (real Kafka): one
read returns each service's latest values; a mark acknowledged by one store is read by
another; a tombstone removes one service's value only."""

from __future__ import annotations

from qryptify.config import KafkaConfig
from qryptify.handoff import LIVE_START, PLAN
from qryptify.kafka import make_producer
from qryptify.offsets import SourceOffsetStore
from qryptify.pairs import Pair

BTC = Pair("BTCUSDT", "1m")
ETH = Pair("ETHUSDT", "1h")


def test_marks_and_offsets_are_read_per_service_in_one_pass(kafka_cfg: KafkaConfig) -> None:
    writer = SourceOffsetStore(kafka_cfg, make_producer(kafka_cfg))
    writer.commit("backfiller", BTC, 100)
    writer.commit(PLAN, BTC, 500)
    writer.commit(PLAN, BTC, 560)  # a later pass: the latest value wins
    writer.commit(LIVE_START, BTC, 540)
    writer.commit("producer", ETH, 900)
    writer.acknowledge()
    reader = SourceOffsetStore(kafka_cfg, make_producer(kafka_cfg))
    found = reader.load_services(("backfiller", PLAN, LIVE_START, "producer", "other"))
    assert found == {
        "backfiller": {BTC: 100},
        PLAN: {BTC: 560},
        LIVE_START: {BTC: 540},
        "producer": {ETH: 900},
        "other": {},
    }
    assert reader.load(PLAN) == {BTC: 560}
    writer.reset(LIVE_START, BTC)
    writer.acknowledge()
    assert reader.load_services((LIVE_START, PLAN)) == {LIVE_START: {}, PLAN: {BTC: 560}}
