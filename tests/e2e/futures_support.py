"""Helpers for the futures end-to-end tests: a config with the futures section, the futures
sink's progress, and the funding table compared with the simulator's truth."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx
from psycopg import sql

from qryptify import db
from qryptify.futures.price import TABLES
from qryptify.metrics import Health
from services.backfiller.__main__ import build as build_backfiller
from services.backfiller.price_klines import PriceKlineBackfill
from services.backfiller.run import Backfiller
from tests.e2e.backfill_support import BackfillEnv
from tests.e2e.backfill_support import (
    group_caught_up as group_caught_up,  # the futures tests' import
)
from tests.integration.conftest import unique
from tests.support.processes import PYTHON, ROOT, wait_until


def futures_env(env: BackfillEnv, *, prices: bool = False, funding: bool = True) -> str:
    """Turn on funding rates (unless ``funding`` is False; with ``prices`` the three price
    kline kinds) on a fresh futures topic; return its name."""
    topic = unique("test") + ".futures"
    env.extra["futures"] = {
        "funding_rates": funding,
        "mark_price": prices,
        "index_price": prices,
        "premium_index": prices,
        "topic": topic,
    }
    return topic


def backfiller(env: BackfillEnv) -> Backfiller:
    """The backfiller as its service entry point builds it (the funding pass included)."""
    return build_backfiller(env.config(), threading.Event(), Health())


@dataclass
class FundingReport:
    symbol: str
    truth: int = 0
    missing: list[int] = field(default_factory=list)
    extra: list[int] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    with_mark: int = 0  # rows carrying REST's mark price
    with_hours: int = 0  # rows carrying the archive's interval

    @property
    def counts(self) -> tuple[int, int, int]:
        return len(self.missing), len(self.extra), len(self.wrong)


def compare_funding(dsn: str, sim_url: str, symbol: str, start: int, end: int) -> FundingReport:
    """Row by row: every truth funding in [start, end) present with the same rate, and the
    mark price / interval equal to the truth wherever the row has one."""
    truth = httpx.get(
        f"{sim_url}/sim/truth/funding",
        params={"symbol": symbol, "start": start, "end": end},
        timeout=30,
    ).json()
    with db.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT (extract(epoch FROM funding_time) * 1000)::bigint, funding_rate, mark_price,"
            " interval_hours FROM funding_rates WHERE symbol = %s AND funding_time >= "
            "to_timestamp(%s / 1000.0) AND funding_time < to_timestamp(%s / 1000.0)",
            (symbol, start, end),
        ).fetchall()
    have = {int(r[0]): r[1:] for r in rows}
    report = FundingReport(symbol, truth=len(truth))
    for t in truth:
        got = have.pop(int(t["fundingTime"]), None)
        if got is None:
            report.missing.append(int(t["fundingTime"]))
            continue
        rate, mark, hours = got
        if rate != float(t["fundingRate"]):
            report.wrong.append(f"{t['fundingTime']} rate {rate} != {t['fundingRate']}")
        if mark is not None:
            report.with_mark += 1
            if mark != float(t["markPrice"]):
                report.wrong.append(f"{t['fundingTime']} mark {mark} != {t['markPrice']}")
        if hours is not None:
            report.with_hours += 1
            if hours != t["intervalHours"]:
                report.wrong.append(f"{t['fundingTime']} hours {hours} != {t['intervalHours']}")
    report.extra = sorted(have)
    return report


@dataclass
class PriceReport:
    kind: str
    pair: str
    truth: int = 0
    missing: list[int] = field(default_factory=list)
    extra: list[int] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)

    @property
    def counts(self) -> tuple[int, int, int]:
        return len(self.missing), len(self.extra), len(self.wrong)


def compare_prices(
    dsn: str, sim_url: str, kind: str, pair: str, start: int, end: int
) -> PriceReport:
    """Row by row against the simulator's closed candles of the kind in [start, end)."""
    symbol, interval = pair.split("/")
    truth = httpx.get(
        f"{sim_url}/sim/truth/price",
        params={"kind": kind, "symbol": symbol, "interval": interval, "start": start, "end": end},
        timeout=30,
    ).json()
    with db.connect(dsn) as conn:
        rows = conn.execute(
            sql.SQL(
                "SELECT (extract(epoch FROM ts) * 1000)::bigint, open, high, low, close,"
                " (extract(epoch FROM close_time) * 1000)::bigint, samples FROM {} WHERE"
                " symbol = %s AND interval = %s AND ts >= to_timestamp(%s / 1000.0)"
                " AND ts < to_timestamp(%s / 1000.0)"
            ).format(sql.Identifier(TABLES[kind])),  # type: ignore[index]
            (symbol, interval, start, end),
        ).fetchall()
    have = {int(r[0]): r[1:] for r in rows}
    report = PriceReport(kind, pair, truth=len(truth))
    for t in truth:
        got = have.pop(int(t[0]), None)
        if got is None:
            report.missing.append(int(t[0]))
            continue
        want = (float(t[1]), float(t[2]), float(t[3]), float(t[4]), int(t[6]), int(t[8]))
        if tuple(got) != want:
            report.wrong.append(f"{t[0]}: {tuple(got)} != {want}")
    report.extra = sorted(have)
    return report


def status_rows(stdout: str) -> dict[tuple[str, str], tuple[int, int, int]]:
    """``qryptify status``'s futures block: per (kind, series), (rows, gaps, empty)."""
    block = stdout.split("futures: funding rates, mark / index / premium-index klines", 1)[1]
    rows = [line.split() for line in block.splitlines()[2:] if line.strip()]
    # kind series rows first(date time) last(date time) gaps empty pointer…
    return {(v[0], v[1]): (int(v[2]), int(v[7]), int(v[8])) for v in rows}


def run_cli(env: BackfillEnv, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m qryptify --config <env's config> ARGS`` as an operator runs it."""
    return subprocess.run(
        [PYTHON, "-m", "qryptify", "--config", str(env.config_path()), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def cli(env: BackfillEnv, *args: str) -> str:
    """``run_cli`` that must succeed; its standard output."""
    done = run_cli(env, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def backfill_with_sink(env: BackfillEnv, *, funding: bool = True) -> PriceKlineBackfill:
    """All price kinds (and funding unless told not) on a fresh futures topic; the sink
    started, one backfiller run that must succeed, and everything it published written.
    Returns the finished price-kline pass (its counters)."""
    topic = futures_env(env, prices=True, funding=funding)
    env.start("services.sink")
    run = backfiller(env)
    assert run.run() == 0
    assert run.futures is not None and run.futures.prices is not None
    wait_written(env, topic)
    return run.futures.prices


def wait_written(env: BackfillEnv, topic: str) -> None:
    """Until the sink committed everything of the klines topic and of the futures ``topic``."""
    wait_until(env.sink_caught_up, 120, "the sink to write the klines")
    group = f"{env.sink_group}.futures"
    wait_until(lambda: group_caught_up(env.kafka, topic, group), 120, "the futures path")


def compare_all_prices(
    env: BackfillEnv, kinds: Sequence[str], start: int, end: int
) -> list[PriceReport]:
    """``compare_prices`` for every kind and configured pair (printed), kind by kind."""
    reports = [
        compare_prices(env.dsn, env.sim.url, kind, pair, start, end)
        for kind in kinds
        for pair in env.pairs
    ]
    for p in reports:
        print(p.kind, p.pair, p.truth, p.counts, p.missing[:3], p.extra[:3], p.wrong[:2])
    return reports
