"""The sink loop's steps, in cycle order: ``poll`` (librdkafka consume calls, consumer thread),
``stage`` (Avro bodies to COPY rows), ``handover`` (split a batch, DLQ, hand it to the
writer), ``wait_writer`` (the consumer blocked on the writer: the database is the limit while
it grows), ``statements`` (probe + COPY or upsert + sync_state, writer thread), ``db_commit``
(the COMMIT), and ``offset_commit`` (the Kafka offset commit request; asynchronous, so its
wall time is the call). Wall and thread-CPU time per step: ``qryptify.timing``.
"""

from __future__ import annotations

from prometheus_client import Counter

from qryptify.timing import Mark, StepTimes

STEPS = (
    "poll", "stage", "handover", "wait_writer", "statements", "db_commit", "offset_commit",
)  # fmt: skip

STEP_SECONDS = Counter(
    "qryptify_sink_step_seconds",
    "Seconds spent per step of the sink's batch cycle; clock=wall includes waiting, clock=cpu "
    "is the CPU time of the thread doing the step",
    ["step", "clock"],
)


def sink_step_times() -> StepTimes:
    return StepTimes(STEP_SECONDS, STEPS)


__all__ = ["STEPS", "Mark", "StepTimes", "sink_step_times"]
