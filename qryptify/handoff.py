"""The backfill → live handoff, pure: which service publishes the candles that close while the
services start, so that no closed candle is left to the backfiller's next recheck.

Two marks per pair on the offsets topic (``qryptify.offsets``, same record as a source offset):

* ``backfiller-plan`` (``PLAN``): the newest open time the backfiller's current pass publishes
  — the last candle closed at the exchange time the pass was planned at. Written, and
  acknowledged by Kafka, before the backfiller reads the producer's live starts.
* ``producer-start`` (``LIVE_START``): the newest open time the producer does *not* own: its
  frontier when it first started without a stored offset (the last candle closed at the
  exchange time it read, less the clock's uncertainty). Written, and acknowledged, before the
  producer reads the backfiller's plans.

Each side writes its mark before it reads the other's, so at least one of them sees the
other (whichever reads second sees the first one's write):

* the producer sees a plan older than its live start → it owns the candles after the plan
  (``producer_resume_from``): its first REST gap fill publishes them within seconds, however
  long the backfiller's pass still runs;
* the backfiller sees a live start beyond its plan → it reads the exchange time again and
  plans its pass through it (``plan_falls_short``).

When both see each other the candles between the two marks are published by both: a few
duplicates, which the sink's upsert absorbs. Nothing here looks at the local clock: both marks
come from exchange time.
"""

from __future__ import annotations

from qryptify.pairs import last_closed_open

#: Service names of the two marks on the offsets topic (keys ``NAME|SYMBOL|interval``).
PLAN = "backfiller-plan"
LIVE_START = "producer-start"


def planned_through(interval: str, exchange_now_ms: int) -> int:
    """The backfiller's mark for a pass planned at ``exchange_now_ms``: the newest closed
    candle's open time (the pass publishes every existing candle up to it)."""
    return last_closed_open(interval, exchange_now_ms)


def live_start(interval: str, exchange_now_ms: int, uncertainty_ms: int) -> int:
    """A fresh producer's frontier: the last candle certainly closed at ``exchange_now_ms``.

    The estimate may run ahead of the exchange by ``uncertainty_ms``; claiming a candle as
    closed too early would leave it to nobody, claiming it too late only repeats it.
    """
    return last_closed_open(interval, exchange_now_ms - max(0, uncertainty_ms))


def producer_resume_from(start: int | None, plan: int | None) -> int | None:
    """Where the producer must resume so that no candle falls between the two services:
    ``plan`` when the backfiller's pass ends before the producer's live ``start``, else None
    (nothing to take over: no plan yet — the backfiller will see the start — or no gap)."""
    if start is None or plan is None or plan >= start:
        return None
    return plan


def plan_falls_short(plan: int, start: int | None) -> bool:
    """True when the producer's live ``start`` lies beyond the backfiller's ``plan``: the
    candles in between are the backfiller's, so its pass must reach ``start``."""
    return start is not None and start > plan
