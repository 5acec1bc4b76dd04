"""Where a sink's time goes, per step of the batch cycle: wall time (waiting included) and CPU
time of the thread that did the step, so a profile separates work from waiting.

Steps, in cycle order: ``poll`` (librdkafka consume calls, consumer thread), ``stage`` (Avro
bodies to COPY rows), ``handover`` (split a batch, DLQ, hand it to the writer), ``wait_writer``
(the consumer blocked on the writer: the database is the limit while it grows), ``statements``
(probe + COPY or upsert + sync_state, writer thread), ``db_commit`` (the COMMIT), and
``offset_commit`` (the Kafka offset commit request; asynchronous, so its wall time is the call).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from prometheus_client import Counter

STEPS = (
    "poll", "stage", "handover", "wait_writer", "statements", "db_commit", "offset_commit",
)  # fmt: skip

STEP_SECONDS = Counter(
    "qryptify_sink_step_seconds",
    "Seconds spent per step of the sink's batch cycle; clock=wall includes waiting, clock=cpu "
    "is the CPU time of the thread doing the step",
    ["step", "clock"],
)
_WALL = {s: STEP_SECONDS.labels(s, "wall") for s in STEPS}
_CPU = {s: STEP_SECONDS.labels(s, "cpu") for s in STEPS}


@dataclass(frozen=True, slots=True)
class Mark:
    """A step's start: wall and thread-CPU clocks."""

    wall: float
    cpu: float

    @classmethod
    def now(cls) -> Mark:
        return cls(time.perf_counter(), time.thread_time())


class StepTimes:
    """Totals per step for one loop (``qryptify replay`` and the bench print them); every
    addition also goes to the Prometheus counter."""

    __slots__ = ("cpu", "wall")

    def __init__(self) -> None:
        self.wall = dict.fromkeys(STEPS, 0.0)
        self.cpu = dict.fromkeys(STEPS, 0.0)

    def add(self, step: str, wall_s: float, cpu_s: float) -> None:
        self.wall[step] += wall_s
        self.cpu[step] += cpu_s
        _WALL[step].inc(wall_s)
        _CPU[step].inc(cpu_s)

    def since(self, step: str, mark: Mark) -> None:
        """Add the time from ``mark`` to now on this thread."""
        self.add(step, time.perf_counter() - mark.wall, time.thread_time() - mark.cpu)

    def per_row_us(self, rows: int) -> dict[str, tuple[float, float]]:
        """Per step: (wall, CPU) microseconds per row."""
        n = max(rows, 1)
        return {s: (self.wall[s] * 1e6 / n, self.cpu[s] * 1e6 / n) for s in STEPS}

    def render(self, rows: int) -> str:
        """One line: ``poll 1.2/0.8 µs, stage ...`` (wall/CPU per row)."""
        per = self.per_row_us(rows)
        return ", ".join(f"{s} {w:.1f}/{c:.1f}" for s, (w, c) in per.items()) + " µs/row (wall/cpu)"
