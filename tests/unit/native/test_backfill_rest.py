"""The backfiller's REST tail on the compiled core publishes exactly what it publishes on the
Python path (``QRYPTIFY_NATIVE=0``): the same records, byte for byte, in the same order,
empty ranges and an invalid candle included; and the comparison fails when the compiled
core's output differs."""

from __future__ import annotations

from typing import Any

import pytest

from qryptify import native
from qryptify.clock import ExchangeClock, FixedClock
from qryptify.pairs import MINUTE_MS
from tests.unit.services.backfiller.test_run import START, Exchange, make


def _published(module: Any, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bytes, bytes]]:
    """Every record one backfill run publishes with ``module`` as the compiled core."""
    monkeypatch.setattr(native, "MODULE", module)
    ex = Exchange(
        missing={("BTCUSDT", START + i * MINUTE_MS) for i in range(30, 35)},
        close_override={("BTCUSDT", START + 42 * MINUTE_MS): "9.0"},  # close above high
    )
    # A clock that does not move: the records' ingest times match between the two runs.
    bf, producer, _ = make(ex, ["BTCUSDT/1m", "BTCUSDT/1h"], clock=ExchangeClock(FixedClock(0)))
    assert bf.run() == 0
    return producer.records


class Counting:
    """The real compiled core, counting the pages it encoded (``alter``: damage each value)."""

    def __init__(self, alter: bool = False) -> None:
        self.real: Any = native.MODULE
        self.alter = alter
        self.pages = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def rest_page_values(self, *args: Any) -> Any:
        found = self.real.rest_page_values(*args)
        if found is not None:
            self.pages += 1
            if self.alter:
                opens, closes, values = found
                found = opens, closes, [v[:-1] + bytes([v[-1] ^ 1]) for v in values]
        return found


def test_the_rest_tail_publishes_the_same_records_on_both_cores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    core = Counting()
    on_native = _published(core, monkeypatch)
    on_python = _published(None, monkeypatch)
    assert core.pages >= 2  # both pairs' pages went through the compiled core
    assert len(on_python) == 180 + 3 - 5 - 1 + 1  # candles - missing - invalid + one range
    assert on_native == on_python


def test_the_comparison_fails_when_the_native_output_differs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    altered = Counting(alter=True)
    on_native = _published(altered, monkeypatch)
    on_python = _published(None, monkeypatch)
    assert altered.pages >= 2
    assert on_native != on_python
