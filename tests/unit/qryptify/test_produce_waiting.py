"""``produce_waiting``: the one produce-until-the-queue-has-room loop (no broker needed: the
queue-full condition is librdkafka's local BufferError, simulated here)."""

from __future__ import annotations

import ast
from typing import Any

from qryptify.kafka import QUEUE_FULL_POLL_S, produce_waiting
from tests.support.source import places_outside


class FullQueue:
    """A producer whose local queue is full for the first ``full_for`` attempts."""

    def __init__(self, full_for: int) -> None:
        self.full_for = full_for
        self.polls: list[float] = []
        self.queued: list[tuple[str, dict[str, Any]]] = []

    def produce(self, topic: str, **record: Any) -> None:
        if self.full_for > 0:
            self.full_for -= 1
            raise BufferError("Local: Queue full")
        self.queued.append((topic, record))

    def poll(self, timeout: float) -> int:
        self.polls.append(timeout)
        return 0


def test_waits_while_the_queue_is_full_then_queues_once() -> None:
    producer = FullQueue(full_for=3)
    produce_waiting(producer, "klines.dlq", key=b"k", value=b"v", headers=[("a", b"b")])  # type: ignore[arg-type]
    assert producer.polls == [QUEUE_FULL_POLL_S] * 3
    assert producer.queued == [
        ("klines.dlq", {"key": b"k", "value": b"v", "headers": [("a", b"b")]})
    ]


def test_a_free_queue_is_not_polled() -> None:
    producer = FullQueue(full_for=0)
    produce_waiting(producer, "klines", key=None, value=b"v")  # type: ignore[arg-type]
    assert producer.polls == []
    assert producer.queued == [("klines", {"key": None, "value": b"v"})]


def test_no_other_produce_loop_in_the_product() -> None:
    # A second ``except BufferError`` loop is a copy of produce_waiting that can drift.
    copies = places_outside(
        "qryptify/kafka.py",
        lambda n: (
            isinstance(n, ast.ExceptHandler)
            and isinstance(n.type, ast.Name)
            and n.type.id == "BufferError"
        ),
    )
    assert copies == []
