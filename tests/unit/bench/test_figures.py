"""The bench table as data and its one renderer (pure: a result file in, markdown out)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from bench.figures import (
    FIGURES,
    HEADER,
    Figure,
    Target,
    evaluate,
    generated_block,
    render_markdown,
    splice,
    table_rows,
)


def experiment(*reps: dict[str, float], **scale: Any) -> dict[str, Any]:
    return {
        "status": "ok",
        "scale": scale,
        "reps": [{"values": v, "load": [1.5 + i, 1.0, 1.0]} for i, v in enumerate(reps)],
        "notes": [],
    }


def report(**experiments: dict[str, Any]) -> dict[str, Any]:
    return {
        "out": "bench/results/x.json",
        "command": "make bench",
        "quick": False,
        "reps": 3,
        "max_load": 3.0,
        "seconds": 90.0,
        "machine": {
            "date": "2026-12-07T00:00:00Z",
            "nproc": 2,
            "memory_gib": 23.5,
            "cpu_model": "AMD EPYC",
            "kernel": "6.1",
            "python": "3.11.7",
            "kafka": "4.1.1",
            "postgresql": "15.18",
            "timescaledb": None,
            "core": "native",
            "git_commit": "0123456789abcdef",
            "git_dirty": False,
            "load_average_at_start": [0.5, 0.4, 0.3],
            "load_average_at_end": [0.9, 0.6, 0.4],
        },
        "experiments": experiments,
    }


RATIO = Figure("9", "x", "ours vs ref", "ours", "rows/s", "ref", "ref label",
               target=Target(">=", 0.6))  # fmt: skip


def test_a_ratio_is_paired_by_repetition_then_summarised() -> None:
    # Per repetition 0.5, 0.75, 1.0: the median of the ratios, not the ratio of the medians.
    exp = experiment({"ours": 50, "ref": 100}, {"ours": 150, "ref": 200}, {"ours": 300, "ref": 300})
    e = evaluate(RATIO, exp)
    assert (e.ratio.median, e.ratio.min, e.ratio.max) == (0.75, 0.5, 1.0)  # type: ignore[union-attr]
    assert e.ours.median == 150 and e.reference is not None and e.reference.median == 200
    assert e.met is True and e.verdict == "met"


def test_a_ratio_below_its_target_is_not_met() -> None:
    e = evaluate(RATIO, experiment({"ours": 50, "ref": 100}, {"ours": 55, "ref": 100}))
    assert e.met is False and e.verdict == "NOT met"


def test_reference_over_ours_is_a_speed_up() -> None:
    # Times: the baseline took 100 s and 60 s where ours took 5 s and 10 s → 20× and 6×.
    fig = Figure("9", "x", "t", "ours_s", "s", "base_s", "baseline", compare="reference/ours",
                 target=Target(">=", 10.0))  # fmt: skip
    e = evaluate(fig, experiment({"ours_s": 5, "base_s": 100}, {"ours_s": 10, "base_s": 60}))
    assert e.ratio is not None and e.ratio.values == (20.0, 6.0)
    assert e.ratio.median == 13.0 and e.met is True


def test_a_target_on_our_own_value_ignores_the_reference() -> None:
    fig = Figure("9", "x", "p50", "db", "ms", "ack", "ack p50", compare="none",
                 target=Target("<=", 30.0, "ours"))  # fmt: skip
    e = evaluate(fig, experiment({"db": 41.0, "ack": 10.0}, {"db": 29.0, "ack": 9.0},
                                 {"db": 45.0, "ack": 11.0}))  # fmt: skip
    assert e.ratio is None and e.ours.median == 41.0 and e.met is False


def test_nothing_measured_is_not_a_verdict() -> None:
    e = evaluate(RATIO, experiment({"other": 1.0}))
    assert math.isnan(e.ours.median) and e.met is None and e.verdict == "n/a"


def test_target_texts() -> None:
    assert Target(">=", 0.6).text("rows/s") == "≥ 0.6×"
    assert Target("<=", 2.0).text("s") == "≤ 2×"
    assert Target(">=", 200_000.0, "ours").text("candles/s") == "≥ 200k candles/s"
    assert Target("<=", 0.1, "ours").text("cores") == "≤ 0.1 cores"


def test_rows_say_what_did_not_run_or_failed() -> None:
    failed = {"status": "failed", "error": "RuntimeError: boom", "reps": [], "scale": {}}
    rows = table_rows(report(replay=failed))
    by_id = {r[0]: r for r in rows}
    assert by_id["1"][2] == "failed: RuntimeError: boom"
    assert by_id["5"][2] == "not run"
    assert [r[0] for r in rows] == [f.id for f in FIGURES]
    assert all(len(r) == len(HEADER) for r in rows)


def test_a_row_carries_scale_reference_target_verdict_and_load() -> None:
    exp = experiment(*({"replay_rows_per_s": 60_000.0, "copy_rows_per_s": 200_000.0},) * 3,
                     rows_m="1.0")  # fmt: skip
    row = {r[0]: r for r in table_rows(report(replay=exp))}["1"]
    assert row == ["1", "replay topic → empty DB (1.0M klines)", "60k rows/s",
                   "raw COPY (text) of the same rows: 200k rows/s", "0.300×", "≥ 0.6×",
                   "NOT met", "1.5–3.5"]  # fmt: skip


def test_every_target_of_issue_16_is_a_figure() -> None:
    # (experiment, ours, reference or None, op, value, on): from the issue's Targets section.
    wanted = {
        ("replay", "replay_rows_per_s", "copy_rows_per_s", ">=", 0.6, "ratio"),
        ("replay", "noop_rows_per_s", "copy_rows_per_s", ">=", 0.6, "ratio"),
        ("history", "archive_s", "floor_s", "<=", 2.0, "ratio"),
        ("history", "archive_s", "seed_projected_s", ">=", 10.0, "ratio"),
        ("history", "rest_candles_per_s", "seed_candles_per_s", ">=", 3.0, "ratio"),
        ("archive", "archive_candles_per_s", "ceiling_msgs_per_s", ">=", 200_000.0, "ours"),
        ("resources", "producer_cores_per_10k", "producer_closes_per_s", "<=", 1.0, "ours"),
        ("resources", "sink_cores_per_10k", "sink_rows_per_s", "<=", 0.1, "ours"),
        ("resources", "backfiller_rss_mb", None, "<=", 150.0, "ours"),
        ("resources", "producer_rss_mb", None, "<=", 150.0, "ours"),
        ("resources", "sink_rss_mb", None, "<=", 150.0, "ours"),
        ("live", "db_p50_ms", "ack_p50_ms", "<=", 30.0, "ours"),
        ("live", "db_p99_ms", "ack_p99_ms", "<=", 150.0, "ours"),
    }
    have = {
        (f.experiment, f.ours, f.reference, f.target.op, f.target.value, f.target.on)
        for f in FIGURES
        if f.target is not None
    }
    assert wanted <= have
    assert len({f.id for f in FIGURES}) == len(FIGURES)


def test_every_figure_names_an_experiment_that_exists() -> None:
    from bench.experiments import EXPERIMENTS

    assert {f.experiment for f in FIGURES} <= {e.key for e in EXPERIMENTS}


def test_the_markdown_has_provenance_machine_line_and_notes() -> None:
    exp = experiment({"replay_rows_per_s": 1.0, "copy_rows_per_s": 2.0})
    exp["notes"] = ["a note"]
    text = render_markdown(report(replay=exp))
    assert text.startswith("Result file: `bench/results/x.json` — `make bench`, full")
    assert "Machine: 2 cores (AMD EPYC), 23.5 GiB RAM" in text
    assert "Core: native." in text and "0.50/0.40/0.30 at start" in text
    assert "- (replay) a note" in text
    assert "| Fig | Measure | Ours |" in text


def test_quick_runs_say_so() -> None:
    quick = report() | {"quick": True, "command": "make bench QUICK=1"}
    assert "QUICK (smoke scale" in render_markdown(quick)


def test_generated_block_is_what_splice_put_between_the_markers() -> None:
    doc = splice("# Doc\n\nintro\n", "the table\nline 2")
    assert generated_block(doc) == "the table\nline 2"
    assert generated_block("no markers") is None


@pytest.mark.parametrize("op", [">=", "<="])
def test_target_met_on_the_boundary(op: Any) -> None:
    assert Target(op, 1.0).met(1.0) is True
