"""Pure statistics for ``make bench``: repetitions → median/min/max, percentiles, ratios, and
the formatting of one table cell. No I/O, no clocks: unit-tested in
tests/unit/test_bench_stats.py (which never asserts on timings).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

NAN = float("nan")


@dataclass(frozen=True, slots=True)
class Spread:
    """The repetitions of one measurement: median, min, max and every value."""

    median: float
    min: float
    max: float
    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    def to_json(self) -> dict[str, object]:
        return {
            "median": _json_float(self.median),
            "min": _json_float(self.min),
            "max": _json_float(self.max),
            "n": self.n,
            "values": [_json_float(v) for v in self.values],
        }


def _json_float(value: float) -> float | None:
    """JSON has no NaN/Infinity: a missing or undefined value becomes null."""
    return None if math.isnan(value) or math.isinf(value) else value


def spread(values: Iterable[float]) -> Spread:
    """Median/min/max over the finite values (NaN = a repetition that measured nothing)."""
    kept = tuple(float(v) for v in values)
    finite = [v for v in kept if not math.isnan(v)]
    if not finite:
        return Spread(NAN, NAN, NAN, kept)
    return Spread(statistics.median(finite), min(finite), max(finite), kept)


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100) with linear interpolation between closest ranks
    (numpy's default "linear" method). NaN for no values."""
    if not 0.0 <= p <= 100.0:
        raise ValueError(f"percentile must be within 0..100, got {p}")
    if not values:
        return NAN
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    fraction = rank - low
    return ordered[low] + (ordered[high] - ordered[low]) * fraction


def latency_summary(values_ms: Sequence[float]) -> dict[str, float]:
    """p50, p99 and max of latencies (ms), plus how many there were."""
    return {
        "p50": percentile(values_ms, 50),
        "p99": percentile(values_ms, 99),
        "max": max(values_ms) if values_ms else NAN,
        "count": float(len(values_ms)),
    }


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator; NaN when either is missing or the denominator is 0."""
    if math.isnan(numerator) or math.isnan(denominator) or denominator == 0:
        return NAN
    return numerator / denominator


def paired_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> Spread:
    """Ratio per repetition (ours_i / reference_i, both measured in repetition i), then spread.

    Pairing by repetition keeps each ratio side by side in time: whatever else loaded the
    machine during repetition i affected both sides of ratio i.
    """
    if len(numerators) != len(denominators):
        raise ValueError(
            f"paired ratios need as many numerators as denominators "
            f"({len(numerators)} != {len(denominators)})"
        )
    return spread(ratio(a, b) for a, b in zip(numerators, denominators, strict=True))


def cores_per_10k(cpu_seconds: float, items: float) -> float:
    """CPU cores used per 10 000 items/s: (cpu_s / wall_s) / (items / wall_s / 1e4), i.e.
    cpu_s × 1e4 / items, independent of the wall time."""
    return ratio(cpu_seconds * 10_000.0, items)


def meets(value: float, target: float, higher_is_better: bool = True) -> bool | None:
    """Whether a measured value meets its target (None: nothing was measured)."""
    if math.isnan(value):
        return None
    return value >= target if higher_is_better else value <= target


def fmt_value(value: float, unit: str = "") -> str:
    """A compact number for a table cell: 1 234 567 → "1.23M", 0.171 → "0.171"."""
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf"
    magnitude = abs(value)
    if unit == "%":
        text = f"{value:.1f}"
    elif magnitude >= 1e6:
        text = f"{value / 1e6:.2f}M"
    elif magnitude >= 1e4:
        text = f"{value / 1e3:.0f}k"
    elif magnitude >= 1e3:
        text = f"{value / 1e3:.1f}k"
    elif magnitude >= 100 or value == int(value):
        text = f"{value:.0f}"
    elif magnitude >= 10:
        text = f"{value:.1f}"
    elif magnitude >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3f}"
    if unit == "%":
        return f"{text} %"
    if unit == "x":
        return f"{text}×"
    return f"{text} {unit}".rstrip()


def fmt_spread(s: Spread, unit: str = "") -> str:
    """``median [min–max]`` (just the median when there was one repetition)."""
    if s.n <= 1 or math.isnan(s.min) or s.min == s.max:
        return fmt_value(s.median, unit)
    return f"{fmt_value(s.median, unit)} [{fmt_value(s.min)}–{fmt_value(s.max)}]"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table (pipes inside cells escaped)."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    out = [line(header), "|" + "|".join("---" for _ in header) + "|"]
    out.extend(line(r) for r in rows)
    return "\n".join(out)


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain fixed-width table for the terminal."""
    widths = [len(h) for h in header]
    for r in rows:
        for i, cell in enumerate(r):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def merge_counts(parts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """Sum counters from several repetitions (429/418 counts and the like)."""
    total: dict[str, int] = {}
    for part in parts:
        for key, value in part.items():
            total[key] = total.get(key, 0) + value
    return total
