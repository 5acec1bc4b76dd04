"""The ``make bench`` table as data: one ``Figure`` per row (what is measured, its reference
from the same repetition, how the two compare, the target) and ONE renderer that turns a
result file (``bench/results/*.json``) into the table. Pure: no I/O, no clocks. What runs the
measurements is ``bench/experiments.py``; each experiment records, per repetition, a flat
mapping of named values (``rows_per_s``, ``floor_s`` …) that the figures below name.

A ratio is always taken within one repetition (ours_i against reference_i, measured side by
side), then summarised over the repetitions as median [min–max] (``bench.stats``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bench.stats import Spread, fmt_spread, fmt_value, markdown_table, paired_ratios, spread

Compare = Literal["ours/reference", "reference/ours", "none"]


@dataclass(frozen=True, slots=True)
class Target:
    """What a figure must reach: ``op value`` on the ratio or on our own value."""

    op: Literal[">=", "<="]
    value: float
    on: Literal["ratio", "ours"] = "ratio"

    def met(self, value: float) -> bool | None:
        if math.isnan(value):
            return None
        return value >= self.value if self.op == ">=" else value <= self.value

    def text(self, unit: str) -> str:
        sign = "≥" if self.op == ">=" else "≤"
        if self.on == "ratio":
            return f"{sign} {self.value:g}×"
        number = fmt_value(self.value) if abs(self.value) >= 1000 else f"{self.value:g}"
        return f"{sign} {number} {unit}".rstrip()


@dataclass(frozen=True, slots=True)
class Figure:
    """One row of the table. ``title`` may name the experiment's scale (``{rows_m}``…)."""

    id: str
    experiment: str
    title: str
    #: The value (per repetition) that is ours, and its unit.
    ours: str
    unit: str
    #: The value measured beside it in the same repetition, if any.
    reference: str | None = None
    reference_label: str = ""
    reference_unit: str | None = None
    #: How the two compare, per repetition: ours ÷ reference, reference ÷ ours, or not at all.
    compare: Compare = "ours/reference"
    target: Target | None = None


FIGURES: tuple[Figure, ...] = (
    # 1. Replay: the topic into a database, against PostgreSQL's own bulk path.
    Figure("1", "replay", "replay topic → empty DB ({rows_m}M klines)", "replay_rows_per_s",
           "rows/s", "copy_rows_per_s", "raw COPY (text) of the same rows",
           target=Target(">=", 0.6)),
    Figure("1e", "replay", "replay topic → empty DB, against binary COPY (what the sink sends)",
           "replay_rows_per_s", "rows/s", "binary_copy_rows_per_s",
           "raw binary COPY of the same rows"),
    Figure("1b", "replay", "no-op replay (into the full table)", "noop_rows_per_s", "rows/s",
           "copy_rows_per_s", "raw COPY (text) of the same rows", target=Target(">=", 0.6)),
    Figure("1c", "replay", "sink consumer thread CPU per row (poll + stage + handover)",
           "consumer_cpu_us", "µs", compare="none"),
    Figure("1d", "replay", "seed write path (executemany) → empty DB", "seed_write_rows_per_s",
           "rows/s", "copy_rows_per_s", "raw COPY (text)"),
    # 2. Full history through the whole pipeline.
    Figure("2", "history", "full history {pairs} × 1m × {days} d ({rows_m}M rows) → DB, wall",
           "archive_s", "s", "floor_s", "raw-COPY floor of exactly those rows",
           target=Target("<=", 2.0)),
    Figure("2b", "history", "full history, speed-up over the seed-style baseline", "archive_s",
           "s", "seed_projected_s", "seed-style baseline (projected)", compare="reference/ours",
           target=Target(">=", 10.0)),
    Figure("2c", "history", "REST only (no weight limit), {sample_days} d × {pairs} pairs",
           "rest_candles_per_s", "candles/s", "seed_candles_per_s",
           "seed-style baseline, same range", target=Target(">=", 3.0)),
    # 3. The exchange's weight limit.
    Figure("3", "weight", "weight used ÷ budget, steady state (page limit 499)", "share_pct",
           "%", compare="none", target=Target(">=", 95.0, "ours")),
    Figure("3b", "weight", "candles/min under 2400 weight/min", "candles_per_min",
           "candles/min", "candles_per_min_1500", "same with page limit 1500"),
    Figure("3c", "weight", "HTTP 429 + 418 responses", "http_429_418", "", compare="none",
           target=Target("<=", 0.0, "ours")),
    # 4. The archive path alone.
    Figure("4", "archive", "archive zip → Kafka ack ({candles_m}M candles, zips prebuilt)",
           "archive_candles_per_s", "candles/s", "ceiling_msgs_per_s",
           "librdkafka alone, per-message reports", target=Target(">=", 200_000.0, "ours")),
    # 5. Live: a close frame to its committed row.
    Figure("5", "live", "x:true → DB commit p50 ({pairs} pairs)", "db_p50_ms", "ms",
           "ack_p50_ms", "x:true → Kafka ack p50", compare="none",
           target=Target("<=", 30.0, "ours")),
    Figure("5b", "live", "x:true → DB commit p99 ({pairs} pairs)", "db_p99_ms", "ms",
           "ack_p99_ms", "x:true → Kafka ack p99", compare="none",
           target=Target("<=", 150.0, "ours")),
    # 6. Memory and 7. CPU, each service as its own process.
    *(
        Figure(f"6{suffix}", "resources", f"peak RSS, {name} ({{pairs}} pairs)",
               f"{name}_rss_mb", "MB", compare="none", target=Target("<=", 150.0, "ours"))
        for suffix, name in (("", "backfiller"), ("b", "producer"), ("c", "sink"))
    ),
    Figure("7", "resources", "producer CPU cores per 10k closes/s", "producer_cores_per_10k",
           "cores", "producer_closes_per_s", "measured at", "closes/s", compare="none",
           target=Target("<=", 1.0, "ours")),
    Figure("7b", "resources", "sink CPU cores per 10k rows/s", "sink_cores_per_10k", "cores",
           "sink_rows_per_s", "measured at", "rows/s", compare="none",
           target=Target("<=", 0.1, "ours")),
    Figure("7c", "resources", "backfiller CPU cores per 10k candles/s",
           "backfiller_cores_per_10k", "cores", "backfiller_candles_per_s", "measured at",
           "candles/s", compare="none"),
)  # fmt: skip

HEADER = ("Fig", "Measure", "Ours", "Reference (same repetition)", "Ratio", "Target", "Met",
          "Load")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Evaluated:
    """A figure with its repetitions summarised: what the renderer prints."""

    figure: Figure
    title: str
    ours: Spread
    reference: Spread | None
    ratio: Spread | None
    met: bool | None

    @property
    def verdict(self) -> str:
        if self.figure.target is None:
            return ""
        return {True: "met", False: "NOT met", None: "n/a"}[self.met]


def values_of(experiment: Mapping[str, Any], name: str) -> list[float]:
    """One value per repetition (NaN where a repetition did not measure it)."""
    out: list[float] = []
    for rep in experiment.get("reps", []):
        value = rep.get("values", {}).get(name)
        out.append(float("nan") if value is None else float(value))
    return out


def evaluate(figure: Figure, experiment: Mapping[str, Any]) -> Evaluated:
    ours = values_of(experiment, figure.ours)
    reference = values_of(experiment, figure.reference) if figure.reference else None
    ratio: Spread | None = None
    if reference is not None and figure.compare == "ours/reference":
        ratio = paired_ratios(ours, reference)
    elif reference is not None and figure.compare == "reference/ours":
        ratio = paired_ratios(reference, ours)
    met: bool | None = None
    if figure.target is not None:
        judged = ratio if figure.target.on == "ratio" else spread(ours)
        met = None if judged is None else figure.target.met(judged.median)
    scale = experiment.get("scale", {})
    return Evaluated(
        figure,
        figure.title.format_map(_Scale(scale)),
        spread(ours),
        None if reference is None else spread(reference),
        ratio,
        met,
    )


class _Scale(dict[str, Any]):
    """``str.format_map`` source: a scale the experiment did not record reads "?"."""

    def __missing__(self, key: str) -> str:
        return "?"


def load_text(experiment: Mapping[str, Any]) -> str:
    """The 1-minute load average over the experiment's repetitions: ``min–max``."""
    loads = [float(rep["load"][0]) for rep in experiment.get("reps", []) if rep.get("load")]
    if not loads:
        return ""
    low, high = min(loads), max(loads)
    return f"{low:.1f}" if low == high else f"{low:.1f}–{high:.1f}"


def table_rows(report: Mapping[str, Any], figures: Sequence[Figure] = FIGURES) -> list[list[str]]:
    """Every figure of the report's experiments as table cells, in ``figures`` order; a figure
    whose experiment did not run (or failed) says so; one the file predates is left out."""
    experiments: Mapping[str, Any] = report.get("experiments", {})
    rows: list[list[str]] = []
    for figure in figures:
        experiment = experiments.get(figure.experiment)
        if experiment is None:
            rows.append([figure.id, figure.title.format_map(_Scale()), "not run", "", "", "", "",
                         ""])  # fmt: skip
            continue
        if experiment.get("status") != "ok" and not experiment.get("reps"):
            status = f"{experiment.get('status')}: {experiment.get('error') or ''}".strip(": ")
            title = figure.title.format_map(_Scale(experiment.get("scale", {})))
            rows.append([figure.id, title, status, "", "", "", "", ""])
            continue
        if _measured_later(figure, experiment):
            continue
        rows.append(_cells(evaluate(figure, experiment), load_text(experiment)))
    return rows


def _measured_later(figure: Figure, experiment: Mapping[str, Any]) -> bool:
    """A result file written before this figure's reference was measured (its repetitions
    lack the value): the figure is left out of that file's table, not shown as n/a."""
    reps = experiment.get("reps") or []
    return bool(reps) and all(
        figure.reference is not None and figure.reference not in rep.get("values", {})
        for rep in reps
    )


def _cells(e: Evaluated, load: str) -> list[str]:
    f = e.figure
    reference = ""
    if e.reference is not None:
        unit = f.unit if f.reference_unit is None else f.reference_unit
        reference = f"{f.reference_label}: {fmt_spread(e.reference, unit)}"
    target = "" if f.target is None else f.target.text(f.unit)
    ratio = "" if e.ratio is None else fmt_spread(e.ratio, "x")
    return [f.id, e.title, fmt_spread(e.ours, f.unit), reference, ratio, target, e.verdict, load]


def _load(values: Sequence[float] | None) -> str:
    return "/".join(f"{x:.2f}" for x in values) if values else "?"


def machine_line(report: Mapping[str, Any]) -> str:
    m = report["machine"]
    tsdb = f", TimescaleDB {m['timescaledb']}" if m.get("timescaledb") else " (no TimescaleDB)"
    return (
        f"Machine: {m['nproc']} cores ({m['cpu_model']}), {m['memory_gib']} GiB RAM, Linux "
        f"{m['kernel']}; Python {m['python']}, Kafka {m.get('kafka')}, PostgreSQL "
        f"{m.get('postgresql')}{tsdb}. Core: {m.get('core', '?')}. Load average (1/5/15 min) "
        f"{_load(m.get('load_average_at_start'))} at start, {_load(m.get('load_average_at_end'))}"
        f" at end; the Load column is the 1-minute load per repetition of that figure; a "
        f"repetition is refused above {report.get('max_load') or 'no limit'}."
    )


def render_markdown(report: Mapping[str, Any], figures: Sequence[Figure] = FIGURES) -> str:
    """The whole generated block: provenance, machine line, table, notes. A function of the
    report alone, so the committed table can be checked against its committed result file."""
    m = report["machine"]
    commit = (m.get("git_commit") or "?")[:10] + (" (dirty)" if m.get("git_dirty") else "")
    scale = "QUICK (smoke scale: verdicts are not the figures)" if report.get("quick") else "full"
    lines = [
        f"Result file: `{report['out']}` — `{report['command']}`, {scale}, measured "
        f"{m['date']} at commit {commit} in {report['seconds'] / 60:.1f} min; "
        f"{report['reps']} repetition(s), median [min–max]; every ratio is taken within one "
        "repetition, ours and its reference measured side by side.",
        "",
        machine_line(report),
        "",
        markdown_table(HEADER, table_rows(report, figures)),
        "",
    ]
    notes = [
        (key, note)
        for key, experiment in report.get("experiments", {}).items()
        for note in experiment.get("notes", [])
    ]
    if notes:
        lines.append("Notes:")
        lines.extend(f"- ({key}) {note}" for key, note in notes)
        lines.append("")
    if report.get("other_load"):
        lines.append(
            f"The machine was shared: {len(report['other_load'])} other test process(es) ran "
            "during the bench (ratios are measured side by side; absolute numbers are lower)."
        )
        lines.append("")
    return "\n".join(lines)


BEGIN_MARK = "<!-- bench:begin (generated by python -m bench --markdown; edit outside) -->"
END_MARK = "<!-- bench:end -->"


def splice(document: str, generated: str) -> str:
    """Replace what lies between the markers (or append them): the prose around survives."""
    block = f"{BEGIN_MARK}\n{generated.rstrip()}\n{END_MARK}"
    start = document.find(BEGIN_MARK)
    end = document.find(END_MARK)
    if start == -1 or end < start:
        return (document.rstrip() + "\n\n" if document.strip() else "") + block + "\n"
    return document[:start] + block + document[end + len(END_MARK) :]


def generated_block(document: str) -> str | None:
    """What lies between the markers (None when there are none)."""
    start = document.find(BEGIN_MARK)
    end = document.find(END_MARK)
    if start == -1 or end < start:
        return None
    return document[start + len(BEGIN_MARK) : end].strip("\n")
