"""The records a ``make bench`` experiment fills in: its repetitions' values, its result, the
run's context. Plain data; ``bench.__main__`` writes them and ``bench.figures`` renders them."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.stats import Spread


class Pending(Exception):  # noqa: N818 - a status, not an error
    """The figure's code is not there yet (another engineer's bench script)."""


class LoadTooHigh(Exception):  # noqa: N818 - a refusal, not an error
    """The machine's load average is above ``--max-load``: figures would measure the others."""

    def __init__(self, load1: float, max_load: float, where: str) -> None:
        self.load1 = load1
        self.max_load = max_load
        super().__init__(
            f"{where}: 1-minute load average {load1:.2f} > --max-load {max_load:g} "
            "(QRYPTIFY_BENCH_MAX_LOAD); refused"
        )


def load_average() -> tuple[float, float, float]:
    one, five, fifteen = os.getloadavg()
    return round(one, 2), round(five, 2), round(fifteen, 2)


@dataclass
class Repetition:
    """One repetition of an experiment: the named values the figures read (ours and the
    references measured beside them), and whatever else is worth keeping in the JSON."""

    values: dict[str, float]
    detail: dict[str, Any] = field(default_factory=dict)
    #: The load average while it ran, when the experiment read it itself (else: at its start).
    load: tuple[float, float, float] | None = None


@dataclass
class ExperimentResult:
    """What one experiment measured: its scale, its repetitions (each with the load average
    at its start), notes for the table, and its status."""

    key: str
    title: str
    scale: dict[str, Any] = field(default_factory=dict)
    reps: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    status: str = "ok"  # ok | pending | failed | refused (load average above --max-load)
    error: str | None = None

    def add(self, rep: Repetition, load: tuple[float, float, float]) -> None:
        seen = load if rep.load is None else rep.load
        self.reps.append({"values": rep.values, "detail": rep.detail, "load": list(seen)})

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "status": self.status,
            "error": self.error,
            "seconds": round(self.seconds, 1),
            "scale": self.scale,
            "reps": self.reps,
            "notes": self.notes,
            "raw": self.raw,
        }


@dataclass
class Context:
    """What every figure gets: the stack's endpoints, a work directory, the run's scale."""

    kafka: str
    pg: str
    workdir: Path
    quick: bool
    reps: int
    profile: str | None = None
    #: Refuse a repetition when the 1-minute load average is above this (None: never).
    max_load: float | None = None

    def check_load(self, where: str) -> tuple[float, float, float]:
        """The load average now (recorded with each repetition); LoadTooHigh above the limit."""
        load = load_average()
        if self.max_load is not None and load[0] > self.max_load:
            raise LoadTooHigh(load[0], self.max_load, where)
        return load


def json_safe(value: Any) -> Any:
    """JSON without NaN/Infinity (null instead), Paths and other objects as strings."""
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, Spread):
        return value.to_json()
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)
