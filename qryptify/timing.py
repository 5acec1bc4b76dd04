"""Where a loop's time goes, per step: wall time (waiting included) and CPU time of the thread
that did the step, so a profile separates work from waiting. The sink loop
(``qryptify.sink.timing``) and the Kafka publishers (``qryptify.publish``) keep one each."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import Counter


@dataclass(frozen=True, slots=True)
class Mark:
    """A step's start: wall and thread-CPU clocks."""

    wall: float
    cpu: float

    @classmethod
    def now(cls) -> Mark:
        return cls(time.perf_counter(), time.thread_time())


class StepTimes:
    """Totals per step (printed by ``qryptify replay`` and the bench); every addition also
    goes to ``counter`` (labels ``step`` and ``clock`` = wall | cpu)."""

    __slots__ = ("_cpu_children", "_wall_children", "cpu", "steps", "wall")

    def __init__(self, counter: Counter, steps: Sequence[str]) -> None:
        self.steps = tuple(steps)
        self.wall = dict.fromkeys(self.steps, 0.0)
        self.cpu = dict.fromkeys(self.steps, 0.0)
        self._wall_children = {s: counter.labels(s, "wall") for s in self.steps}
        self._cpu_children = {s: counter.labels(s, "cpu") for s in self.steps}

    def add(self, step: str, wall_s: float, cpu_s: float) -> None:
        self.wall[step] += wall_s
        self.cpu[step] += cpu_s
        self._wall_children[step].inc(wall_s)
        self._cpu_children[step].inc(cpu_s)

    def since(self, step: str, mark: Mark) -> None:
        """Add the time from ``mark`` to now on this thread."""
        self.add(step, time.perf_counter() - mark.wall, time.thread_time() - mark.cpu)

    def per_row_us(self, rows: int) -> dict[str, tuple[float, float]]:
        """Per step: (wall, CPU) microseconds per row."""
        n = max(rows, 1)
        return {s: (self.wall[s] * 1e6 / n, self.cpu[s] * 1e6 / n) for s in self.steps}

    def render(self, rows: int) -> str:
        """One line: ``poll 1.2/0.8, stage ... µs/row (wall/cpu)``."""
        per = self.per_row_us(rows)
        return ", ".join(f"{s} {w:.1f}/{c:.1f}" for s, (w, c) in per.items()) + " µs/row (wall/cpu)"
