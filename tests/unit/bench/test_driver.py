"""How ``python -m bench`` runs an experiment's repetitions (no stack: fake experiments)."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import pytest

from bench.__main__ import parse_args, run_experiment
from bench.experiments import Experiment
from bench.model import Context, ExperimentResult, Repetition


def test_every_repetition_is_kept_with_its_load(tmp_path: Path) -> None:
    def two(ctx: Context, result: ExperimentResult) -> Generator[Repetition, None, None]:
        result.scale = {"n": 2}
        for i in range(ctx.reps):
            yield Repetition({"v": float(i)})
        result.notes.append("done")

    ctx = Context("k", "pg", tmp_path, quick=False, reps=3)
    result = run_experiment(Experiment("x", "X", two), ctx)
    assert result.status == "ok" and result.notes == ["done"]
    assert [r["values"]["v"] for r in result.reps] == [0.0, 1.0, 2.0]
    assert all(len(r["load"]) == 3 for r in result.reps)


def test_a_failure_keeps_what_was_measured_and_cleans_up(tmp_path: Path) -> None:
    cleaned: list[bool] = []

    def breaks(ctx: Context, result: ExperimentResult) -> Generator[Repetition, None, None]:
        try:
            yield Repetition({"v": 1.0})
            raise RuntimeError("broker gone")
        finally:
            cleaned.append(True)

    result = run_experiment(Experiment("x", "X", breaks), Context("k", "pg", tmp_path, False, 3))
    assert result.status == "failed" and result.error == "RuntimeError: broker gone"
    assert len(result.reps) == 1 and cleaned == [True]


def test_a_repetition_above_the_load_limit_is_refused(tmp_path: Path) -> None:
    cleaned: list[bool] = []

    def never(ctx: Context, result: ExperimentResult) -> Generator[Repetition, None, None]:
        try:
            yield Repetition({"v": 1.0})
        finally:
            cleaned.append(True)

    ctx = Context("k", "pg", tmp_path, quick=False, reps=3, max_load=-1.0)
    result = run_experiment(Experiment("x", "X", never), ctx)
    assert result.status == "refused" and "--max-load -1" in (result.error or "")
    assert result.reps == []


def test_full_runs_take_at_least_three_repetitions() -> None:
    assert parse_args([]).reps == 3
    assert parse_args(["--quick"]).reps == 1
    with pytest.raises(SystemExit):
        parse_args(["--reps", "2"])
    assert parse_args(["--reps", "5", "--only", "replay,live"]).only_list == ["replay", "live"]
    with pytest.raises(SystemExit):
        parse_args(["--only", "nonsense"])
