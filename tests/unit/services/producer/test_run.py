"""The producer's resume points at start (the handoff with the backfiller), with a fake offsets
store and a fixed exchange clock: which frontier each pair gets, what is written, in which
order."""

from __future__ import annotations

import threading
from typing import Any, cast

from qryptify.config import build_config
from qryptify.handoff import LIVE_START, PLAN
from qryptify.metrics import Health
from qryptify.pairs import MINUTE_MS, Pair
from services.producer.run import SERVICE, ProducerRunner
from tests.conftest import T0

M = MINUTE_MS
BTC = Pair("BTCUSDT", "1m")
NOW = T0 + 10 * M + 200  # 10:00.200 past T0: the candle T0+9m closed 200 ms ago


class FakeOffsets:
    def __init__(self, marks: dict[str, dict[Pair, int]]) -> None:
        self.marks = {service: dict(values) for service, values in marks.items()}
        self.steps: list[str] = []

    def load_services(self, services: tuple[str, ...]) -> dict[str, dict[Pair, int]]:
        self.steps += [f"load {s}" for s in services]
        return {s: dict(self.marks.get(s, {})) for s in services}

    def load(self, service: str) -> dict[Pair, int]:
        return self.load_services((service,))[service]

    def commit(self, service: str, pair: Pair, last_open_time: int) -> None:
        self.steps.append(f"commit {service}")
        self.marks.setdefault(service, {})[pair] = last_open_time

    def acknowledge(self, timeout_s: float = 30.0) -> None:
        self.steps.append("acknowledge")


class FixedClock:
    uncertainty_ms = 100

    def now_ms(self) -> int:
        return NOW


def resume(
    marks: dict[str, dict[Pair, int]], clock: FixedClock | None = None
) -> tuple[dict[Pair, int], FakeOffsets]:
    offsets = FakeOffsets(marks)
    runner = ProducerRunner(
        build_config({"pairs": [str(BTC)]}),
        threading.Event(),
        Health(),
        producer=cast(Any, None),
        rest=cast(Any, None),
        clock=cast(Any, clock or FixedClock()),
        offsets=cast(Any, offsets),
    )
    return runner._resume_points(), offsets


def test_a_fresh_pair_starts_live_and_acknowledges_that_before_reading_the_plans() -> None:
    points, offsets = resume({})
    assert points == {BTC: T0 + 9 * M}
    assert offsets.marks[SERVICE] == offsets.marks[LIVE_START] == {BTC: T0 + 9 * M}
    assert offsets.steps.index("acknowledge") < offsets.steps.index(f"load {PLAN}")
    assert offsets.steps.index(f"commit {LIVE_START}") < offsets.steps.index("acknowledge")


def test_a_candle_that_may_still_be_open_is_the_producers() -> None:
    class Uncertain(FixedClock):
        uncertainty_ms = 300  # now may be 10:00.200 - 300 ms: T0+9m may still be open

    assert resume({}, Uncertain())[0] == {BTC: T0 + 8 * M}


def test_a_fresh_pair_takes_over_from_a_plan_that_ends_before_now() -> None:
    # the backfiller planned its pass (through T0+5m) before the producer started
    points, offsets = resume({PLAN: {BTC: T0 + 5 * M}})
    assert points == {BTC: T0 + 5 * M}
    assert offsets.marks[SERVICE] == offsets.marks[LIVE_START] == {BTC: T0 + 5 * M}


def test_a_plan_reaching_the_live_start_changes_nothing() -> None:
    points, offsets = resume({PLAN: {BTC: T0 + 9 * M}})
    assert points == {BTC: T0 + 9 * M}
    assert offsets.marks[LIVE_START] == {BTC: T0 + 9 * M}


def test_a_restart_takes_over_a_plan_it_did_not_see_before_it_died() -> None:
    # started live at T0+9m, died before reading the plan, which ends at T0+5m
    stored = {SERVICE: {BTC: T0 + 9 * M}, LIVE_START: {BTC: T0 + 9 * M}, PLAN: {BTC: T0 + 5 * M}}
    points, offsets = resume(stored)
    assert points == {BTC: T0 + 5 * M}
    assert offsets.marks[LIVE_START] == {BTC: T0 + 5 * M}


def test_a_restart_resumes_from_its_offset_when_the_plan_covers_its_live_start() -> None:
    stored = {SERVICE: {BTC: T0 + 7 * M}, LIVE_START: {BTC: T0 + 3 * M}, PLAN: {BTC: T0 + 6 * M}}
    points, offsets = resume(stored)
    assert points == {BTC: T0 + 7 * M}
    assert not [step for step in offsets.steps if step.startswith("commit")]
