"""The table in README.md and docs/performance.md is exactly what the renderer makes of the
committed result file it names: a hand edit, or a result file not committed, fails here."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from bench.figures import generated_block, render_markdown

ROOT = Path(__file__).resolve().parents[3]
DOCS = ("README.md", "docs/performance.md")


def result_file(block: str) -> str:
    found = re.match(r"Result file: `([^`]+)`", block)
    assert found, f"the generated block does not name its result file:\n{block[:300]}"
    return found.group(1)


@pytest.mark.parametrize("doc", DOCS)
def test_the_table_is_rendered_from_the_committed_result_file(doc: str) -> None:
    block = generated_block((ROOT / doc).read_text())
    assert block is not None, f"{doc} has no bench markers"
    path = result_file(block)
    assert path.startswith("bench/results/") and path.endswith(".json")
    tracked = subprocess.run(
        ["git", "ls-files", "--error-unmatch", path], cwd=ROOT, capture_output=True, check=False
    )
    assert tracked.returncode == 0, f"{doc} quotes {path}, which is not committed"
    expected = render_markdown(json.loads((ROOT / path).read_text()))
    assert block == expected.rstrip(), f"{doc}'s table differs from {path}; rerun make bench"


def test_readme_and_performance_doc_quote_the_same_run() -> None:
    blocks = [generated_block((ROOT / doc).read_text()) for doc in DOCS]
    assert blocks[0] == blocks[1]


def test_a_changed_figure_is_caught() -> None:
    # The check above can fail: one digit changed in the rendered table no longer matches.
    block = generated_block((ROOT / "README.md").read_text())
    assert block is not None
    report = json.loads((ROOT / result_file(block)).read_text())
    for experiment in report["experiments"].values():
        for rep in experiment["reps"]:
            for key, value in rep["values"].items():
                if isinstance(value, float) and value > 0:
                    rep["values"][key] = value * 3
    assert render_markdown(report).rstrip() != block


def test_a_figure_the_result_file_predates_is_left_out_and_shown_once_measured() -> None:
    block = generated_block((ROOT / "README.md").read_text())
    assert block is not None
    report = json.loads((ROOT / result_file(block)).read_text())
    replay = report["experiments"]["replay"]
    for rep in replay["reps"]:
        rep["values"].pop("binary_copy_rows_per_s", None)
    assert "| 1e |" not in render_markdown(report)
    for rep in replay["reps"]:
        rep["values"]["binary_copy_rows_per_s"] = 2 * rep["values"]["replay_rows_per_s"]
    assert "| 1e | replay topic → empty DB, against binary COPY" in render_markdown(report)
    assert "0.500×" in render_markdown(report)
