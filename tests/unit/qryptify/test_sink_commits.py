"""The sink's asynchronous offset commits: sent after the batch's database COMMIT, results read
from the consumer's on_commit callback, failures sent again with the highest offsets the
database holds, never skipped; and the per-step timers. A fake consumer records the calls (no
broker: the loop's real runs are in tests/integration)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from qryptify.avro import KlineCodec
from qryptify.sink.batch import FlushPolicy, Record, StagedBatch
from qryptify.sink.loop import LoopSettings, OffsetCommits, SinkLoop
from qryptify.sink.timing import STEPS, sink_step_times
from tests.conftest import make_kline

TOPIC = "klines"


class FakeConsumer:
    def __init__(self) -> None:
        self.commits: list[tuple[list[tuple[str, int, int]], bool]] = []

    def commit(self, *, offsets: list[Any], asynchronous: bool) -> list[Any]:
        self.commits.append(([(t.topic, t.partition, t.offset) for t in offsets], asynchronous))
        return offsets


class FakeTp:
    def __init__(self, partition: int, offset: int, error: Any = None) -> None:
        self.topic, self.partition, self.offset, self.error = TOPIC, partition, offset, error


def _loop(commits: OffsetCommits | None) -> tuple[SinkLoop, FakeConsumer]:
    consumer = FakeConsumer()
    loop = SinkLoop(
        consumer,  # type: ignore[arg-type]
        lambda: None,  # type: ignore[arg-type, return-value]
        LoopSettings(TOPIC, FlushPolicy(10, 10)),
        threading.Event(),
        commits=commits,
    )
    loop.assigned = {(TOPIC, 0), (TOPIC, 1)}
    return loop, consumer


def _split(*records: tuple[int, int]) -> Any:
    staged = StagedBatch(KlineCodec())
    k = make_kline()
    staged.add([Record(TOPIC, p, o, k.key.encode(), None) for p, o in records], 0)
    return staged.split()


def test_offsets_go_asynchronously_after_the_write_and_failures_are_sent_again() -> None:
    commits = OffsetCommits()
    loop, consumer = _loop(commits)
    loop._commit(_split((0, 4), (1, 7)))
    assert consumer.commits == [([(TOPIC, 0, 5), (TOPIC, 1, 8)], True)]
    assert loop.positions == {0: 5, 1: 8}  # the database holds them: the floor moves now
    loop._commit(_split((0, 9)))
    # The first commit failed for partition 1, the second succeeded for partition 0.
    commits.record(None, [FakeTp(0, 5), FakeTp(1, 8, error="REBALANCE_IN_PROGRESS")])
    commits.record(None, [FakeTp(0, 10)])
    loop._check_commits()
    assert consumer.commits[-1] == ([(TOPIC, 1, 8)], True)  # sent again, not skipped
    assert loop._commit_retry == {(TOPIC, 1)}
    loop._check_commits()  # within 0.5 s: not sent a third time yet
    assert len(consumer.commits) == 3
    commits.record(None, [FakeTp(1, 8)])
    loop._check_commits()
    assert loop._commit_retry == set() and len(consumer.commits) == 3


def test_a_failed_partition_we_no_longer_own_is_left_to_its_next_owner() -> None:
    commits = OffsetCommits()
    loop, consumer = _loop(commits)
    loop._commit(_split((1, 3)))
    commits.record("coordinator gone", [FakeTp(1, 4)])
    loop.assigned = {(TOPIC, 0)}
    loop._check_commits()
    assert loop._commit_retry == set() and len(consumer.commits) == 1


def test_without_the_callback_commits_are_synchronous_and_never_go_backwards() -> None:
    loop, consumer = _loop(None)
    loop._commit(_split((0, 9)))
    loop._commit(_split((0, 4)))  # an older batch (re-read after a rewind) commits nothing lower
    assert consumer.commits == [([(TOPIC, 0, 10)], False), ([(TOPIC, 0, 10)], False)]


def test_step_times_add_up_per_row() -> None:
    times = sink_step_times()
    times.add("stage", 2.0, 1.5)
    times.add("stage", 1.0, 0.5)
    times.add("poll", 0.5, 0.0)
    per = times.per_row_us(1_000_000)
    assert per["stage"] == pytest.approx((3.0, 2.0))
    assert per["poll"] == pytest.approx((0.5, 0.0))
    assert set(per) == set(STEPS)
    assert times.render(1_000_000).startswith("poll 0.5/0.0, stage 3.0/2.0,")
