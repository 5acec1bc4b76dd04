"""The pure statistics behind ``make bench`` (no timings measured or asserted here)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.stats import (
    cores_per_10k,
    fmt_spread,
    fmt_value,
    latency_summary,
    markdown_table,
    meets,
    merge_counts,
    paired_ratios,
    percentile,
    ratio,
    spread,
    text_table,
)


def test_spread_odd_and_even() -> None:
    s = spread([3.0, 1.0, 2.0])
    assert (s.median, s.min, s.max, s.n) == (2.0, 1.0, 3.0, 3)
    assert spread([4.0, 1.0, 2.0, 3.0]).median == 2.5


def test_spread_ignores_nan_but_keeps_it_in_values() -> None:
    s = spread([1.0, math.nan, 5.0])
    assert (s.median, s.min, s.max) == (3.0, 1.0, 5.0)
    assert s.n == 3
    assert s.to_json()["values"] == [1.0, None, 5.0]


def test_spread_of_nothing_is_nan() -> None:
    s = spread([])
    assert math.isnan(s.median) and s.n == 0
    assert s.to_json()["median"] is None


def test_percentile_linear_interpolation() -> None:
    values = [10.0, 20.0, 30.0, 40.0]
    assert percentile(values, 0) == 10.0
    assert percentile(values, 100) == 40.0
    assert percentile(values, 50) == 25.0
    assert percentile([5.0], 99) == 5.0
    assert percentile(list(map(float, range(1, 101))), 99) == pytest.approx(99.01)
    assert math.isnan(percentile([], 50))


def test_percentile_does_not_need_sorted_input() -> None:
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0


@pytest.mark.parametrize("p", [-1.0, 100.5])
def test_percentile_rejects_out_of_range(p: float) -> None:
    with pytest.raises(ValueError, match="percentile"):
        percentile([1.0], p)


def test_latency_summary() -> None:
    summary = latency_summary([1.0, 2.0, 3.0, 100.0])
    assert summary["p50"] == 2.5
    assert summary["max"] == 100.0
    assert summary["count"] == 4.0
    assert math.isnan(latency_summary([])["p99"])


def test_ratio_and_its_undefined_cases() -> None:
    assert ratio(6.0, 3.0) == 2.0
    assert math.isnan(ratio(1.0, 0.0))
    assert math.isnan(ratio(math.nan, 1.0))


def test_paired_ratios_pair_by_repetition() -> None:
    s = paired_ratios([10.0, 30.0, 20.0], [10.0, 10.0, 10.0])
    assert (s.median, s.min, s.max) == (2.0, 1.0, 3.0)
    with pytest.raises(ValueError, match="as many"):
        paired_ratios([1.0], [1.0, 2.0])


def test_cores_per_10k_is_cpu_seconds_per_item_scaled() -> None:
    # 2 CPU seconds for 40 000 items: 0.5 cores per 10k items/s whatever the wall time.
    assert cores_per_10k(2.0, 40_000) == 0.5
    assert math.isnan(cores_per_10k(1.0, 0))


def test_meets() -> None:
    assert meets(0.7, 0.6) is True
    assert meets(0.5, 0.6) is False
    assert meets(40.0, 50.0, higher_is_better=False) is True
    assert meets(math.nan, 1.0) is None


def test_formatting() -> None:
    assert fmt_value(1_234_567, "rows/s") == "1.23M rows/s"
    assert fmt_value(12_345) == "12k"
    assert fmt_value(0.171) == "0.171"
    assert fmt_value(97.25, "%") == "97.2 %"
    assert fmt_value(3.5, "x") == "3.50×"
    assert fmt_value(math.nan) == "n/a"
    assert fmt_spread(spread([1.5, 2.5, 3.5]), "s") == "2.50 s [1.50–3.50]"
    assert fmt_spread(spread([2.0]), "s") == "2 s"


def test_tables() -> None:
    md = markdown_table(["a", "b"], [["1", "x|y"]])
    assert md.splitlines() == ["| a | b |", "|---|---|", "| 1 | x\\|y |"]
    text = text_table(["name", "v"], [["long name", "1"]])
    assert text.splitlines()[0].startswith("name     ")


def test_merge_counts() -> None:
    assert merge_counts([{"429": 1}, {"429": 2, "418": 1}]) == {"429": 3, "418": 1}


def test_markdown_splice_keeps_the_prose_around() -> None:
    from bench.figures import BEGIN_MARK, END_MARK, splice

    first = splice("", "table v1")
    assert first == f"{BEGIN_MARK}\ntable v1\n{END_MARK}\n"
    doc = f"# Title\n\nintro\n\n{first}\nafter\n"
    again = splice(doc, "table v2")
    assert "table v1" not in again
    assert again.startswith("# Title\n\nintro\n\n") and again.endswith("\nafter\n")
    assert "table v2" in again


def test_weight_share_is_measured_over_whole_limit_windows() -> None:
    from bench.backfill_figures import whole_windows

    # 10 s into a window, 150 s to go: read just before the next window starts, then one whole
    # window (a second would end after the deadline); with 195 s to go, two.
    first, windows = whole_windows(610.0, 760.0)
    assert (first, windows) == (659.75, 1)
    first, windows = whole_windows(605.0, 800.0)
    assert (first, windows) == (659.75, 2)
    # Never less than one window, even past the deadline; never a reading in the past.
    first, windows = whole_windows(659.9, 600.0)
    assert (first, windows) == (719.75, 1)


def test_a_repetition_is_refused_above_the_load_limit(tmp_path: Path) -> None:
    from bench.model import Context, LoadTooHigh, load_average

    assert len(load_average()) == 3
    ctx = Context("k", "pg", tmp_path, quick=True, reps=1, max_load=-1.0)
    with pytest.raises(LoadTooHigh, match="--max-load -1"):
        ctx.check_load("replay rep 1")
    unlimited = Context("k", "pg", tmp_path, quick=True, reps=1)
    assert unlimited.check_load("replay rep 1")[0] >= 0
