"""The one DLQ writer: what a producer's dead frame looks like on the topic, and the sink's
wait-for-delivery contract (a fake producer stands in for librdkafka: no I/O here)."""

from __future__ import annotations

from typing import Any

import pytest

from qryptify.dlq import DlqWriter, FrameLetter
from qryptify.errors import DlqUnavailable


class _Producer:
    def __init__(self, fail: str | None = None, remaining: int = 0) -> None:
        self.sent: list[dict[str, Any]] = []
        self.fail = fail
        self.remaining = remaining

    def produce(self, topic: str, **kwargs: Any) -> None:
        self.sent.append({"topic": topic, **kwargs})
        kwargs["on_delivery"](self.fail, None)

    def poll(self, _timeout: float) -> int:
        return 0

    def flush(self, _timeout: float) -> int:
        return self.remaining


def test_a_frame_letter_is_the_raw_frame_keyed_by_its_stream_with_why_in_headers() -> None:
    key, value, headers = FrameLetter(b'{"x":1', "not_json", "bad", "btcusdt@kline_1m").bounded()
    assert key == b"btcusdt@kline_1m"
    assert value == b'{"x":1'
    assert headers == [
        ("qryptify.reason", b"not_json: bad"),
        ("qryptify.source", b"ws"),
        ("qryptify.stream", b"btcusdt@kline_1m"),
    ]


def test_a_frame_without_a_stream_has_no_key_and_a_reason_of_at_most_500_chars() -> None:
    key, _value, headers = FrameLetter(b"?", "not_json", "r" * 900, None).bounded()
    assert key is None
    assert len(dict(headers)["qryptify.reason"] or b"") == 500
    assert dict(headers)["qryptify.stream"] == b""


def test_post_does_not_wait_and_send_raises_when_delivery_did_not_happen() -> None:
    producer = _Producer()
    DlqWriter(producer, "dlq").post(FrameLetter(b"x", "not_json", "r", None))  # type: ignore[arg-type]
    assert [m["topic"] for m in producer.sent] == ["dlq"]
    failing = _Producer(fail="broker down")
    with pytest.raises(DlqUnavailable, match="broker down"):
        DlqWriter(failing, "dlq").send([FrameLetter(b"x", "k", "r", None)])  # type: ignore[arg-type]
    with pytest.raises(DlqUnavailable, match="1 undelivered"):
        DlqWriter(_Producer(remaining=1), "dlq").send([FrameLetter(b"x", "k", "r", None)])  # type: ignore[arg-type]
