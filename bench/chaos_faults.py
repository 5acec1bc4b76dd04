"""The chaos run's fault schedule: pure, seeded, repeatable (``make chaos``; see bench/chaos.py).

``plan_faults(seed, profile)`` places every fault of a :class:`Profile` at a time of the fault
phase (seconds from its start) under the constraints that keep the run meaningful:

* one window at a time per simulator flag (a flag has one value);
* a service is never killed while it is down, and comes back before the phase ends;
* the sink take-over: one sink stays down longer than the consumer session timeout so the
  other sink must take over its partitions; the other sink is not killed meanwhile;
* broker and database restarts are spaced out (each has its own slot);
* malformed-frame windows are isolated from anything that can cut the producer off its frames
  (producer kills, WS drops and stalls, broker restarts), so the checker can require that
  EVERY malformed frame the simulator sent is in the DLQ — exactly, not roughly.

``plan_data_faults`` picks the exchange-side data faults (an empty range in the history and one
in the live window, corrected candles, a missing and a corrupt archive file) from the run's
pairs; ``sim_patch`` turns a window into the ``POST /sim/faults`` body that starts or ends it.

Nothing here does I/O or reads a clock: the unit tests (tests/unit/test_chaos_plan.py) check
every constraint for many seeds.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from qryptify.pairs import DAY_MS, MINUTE_MS, Pair, align_open

# Fault kinds ------------------------------------------------------------------------------
KILL = "kill9"  # SIGKILL one service, restart it after down_s
TAKEOVER = "kill9_takeover"  # SIGKILL a sink and keep it down past the session timeout
KAFKA_RESTART = "kafka_restart"  # mode "restart" (supervisorctl) or "kill9" (SIGKILL the JVM)
PG_RESTART = "pg_restart"  # mode "restart" (fast shutdown) or "crash" (SIGQUIT: immediate)
REST_429 = "rest_429_storm"
REST_5XX = "rest_5xx_burst"
WS_DROP = "ws_drop"
WS_STALL = "ws_stall"
WS_SKIP = "ws_skip_closes"
WS_DUPLICATE = "ws_duplicate_closes"
WS_MALFORMED = "ws_malformed_frames"
TOPIC_GARBAGE = "topic_garbage"  # undecodable / invalid records produced into the topic

#: Windows that set one simulator flag for their duration.
SIM_WINDOWS: tuple[str, ...] = (
    REST_429,
    REST_5XX,
    WS_DROP,
    WS_STALL,
    WS_SKIP,
    WS_DUPLICATE,
    WS_MALFORMED,
)
ALL_KINDS: tuple[str, ...] = (
    KILL,
    TAKEOVER,
    KAFKA_RESTART,
    PG_RESTART,
    *SIM_WINDOWS,
    TOPIC_GARBAGE,
)
SERVICES: tuple[str, ...] = ("backfiller", "producer", "sink-a", "sink-b")
SINKS: tuple[str, ...] = ("sink-a", "sink-b")

#: Seconds a restarted service needs before it counts as up again (imports, connect, join).
STARTUP_S = 8.0
#: librdkafka's default session.timeout.ms is 45 s: a take-over needs the sink down longer.
SESSION_TIMEOUT_S = 45.0
TAKEOVER_DOWN_S = SESSION_TIMEOUT_S + 10.0
#: Seconds one broker / database restart occupies (stop, start, clients reconnecting).
INFRA_SLOT_S = 30.0
#: Around a malformed-frame window nothing may cut the producer off its frames.
MALFORMED_GUARD_BEFORE_S = 15.0
MALFORMED_GUARD_AFTER_S = 10.0
#: What cuts the producer off its frames (besides killing it).
_FRAME_CUTTERS = (WS_DROP, WS_STALL, KAFKA_RESTART)


class PlanError(ValueError):
    """The profile's faults do not fit into its duration under the constraints."""


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault at ``at_s`` seconds into the fault phase.

    ``duration_s`` is the window length (simulator flags), the time down (kills) or the slot
    (restarts); ``value`` the flag's value (a rate, seconds between drops, records injected).
    """

    at_s: float
    kind: str
    target: str | None = None
    duration_s: float = 0.0
    value: float = 0.0
    mode: str = ""

    @property
    def end_s(self) -> float:
        return self.at_s + self.duration_s

    def describe(self) -> str:
        parts = [f"{self.at_s:7.1f}s {self.kind}"]
        if self.target:
            parts.append(self.target)
        if self.mode:
            parts.append(self.mode)
        if self.duration_s:
            parts.append(f"for {self.duration_s:.1f}s")
        if self.value:
            parts.append(f"value={self.value:g}")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Profile:
    """How much of each fault one run injects, and over how long."""

    name: str
    duration_s: float
    kills: Mapping[str, int]  # service → plain kill -9 count (the take-over comes on top)
    takeover: bool
    kafka_restarts: tuple[str, ...]  # modes, in order
    pg_restarts: tuple[str, ...]
    windows: Mapping[str, int]  # simulator window kind → count
    garbage: int  # topic-garbage injections
    garbage_records: int = 4  # records per injection (one of each malformation)
    kill_down_s: tuple[float, float] = (0.5, 6.0)
    window_s: tuple[float, float] = (6.0, 15.0)

    @property
    def total_kills(self) -> int:
        return sum(self.kills.values()) + (1 if self.takeover else 0)


QUICK = Profile(
    name="quick",
    duration_s=110.0,
    kills={"backfiller": 2, "producer": 2, "sink-a": 1, "sink-b": 2},
    takeover=True,
    kafka_restarts=("restart",),
    pg_restarts=("crash",),
    windows={kind: 1 for kind in SIM_WINDOWS},
    garbage=1,
    kill_down_s=(0.5, 3.0),
    window_s=(5.0, 9.0),
)
FULL = Profile(
    name="full",
    duration_s=660.0,
    kills={"backfiller": 6, "producer": 6, "sink-a": 5, "sink-b": 5},
    takeover=True,
    kafka_restarts=("restart", "kill9", "restart"),
    pg_restarts=("restart", "crash", "restart"),
    windows={
        REST_429: 3,
        REST_5XX: 3,
        WS_DROP: 2,
        WS_STALL: 2,
        WS_SKIP: 2,
        WS_DUPLICATE: 2,
        WS_MALFORMED: 2,
    },
    garbage=3,
)
PROFILES: dict[str, Profile] = {p.name: p for p in (QUICK, FULL)}


# -- placement --------------------------------------------------------------------------------


def _overlaps(a0: float, a1: float, b0: float, b1: float) -> bool:
    return a0 < b1 and b0 < a1


@dataclass(slots=True)
class _Board:
    """The faults placed so far, with the questions the constraints ask."""

    faults: list[Fault] = field(default_factory=list)

    def busy(self, kinds: Sequence[str], t0: float, t1: float, target: str | None = None) -> bool:
        return any(
            f.kind in kinds
            and (target is None or f.target == target)
            and _overlaps(t0, t1, *_occupied(f))
            for f in self.faults
        )


def _occupied(f: Fault) -> tuple[float, float]:
    """The time a fault keeps its resource (a service, the broker, a flag) busy."""
    if f.kind in (KILL, TAKEOVER):
        return f.at_s, f.end_s + STARTUP_S
    return f.at_s, f.end_s


def _malformed_zone(f: Fault) -> tuple[float, float]:
    return f.at_s - MALFORMED_GUARD_BEFORE_S, f.end_s + MALFORMED_GUARD_AFTER_S


def _cuts_frames(f: Fault, t0: float, t1: float) -> bool:
    """Would ``f`` cut the producer off its frames during ``[t0, t1)``?"""
    if f.kind in _FRAME_CUTTERS or (f.kind == KILL and f.target == "producer"):
        return _overlaps(t0, t1, *_occupied(f))
    return False


def _fits(board: _Board, cand: Fault, horizon: float) -> bool:
    occ0, occ1 = _occupied(cand)
    if cand.at_s < 0 or occ1 > horizon:
        return False
    if cand.kind in (KILL, TAKEOVER):
        if board.busy((KILL, TAKEOVER), occ0, occ1, cand.target):
            return False
        # While one sink is away for its take-over, the other must stay up to take over.
        for f in board.faults:
            if (
                f.kind == TAKEOVER
                and cand.target in SINKS
                and cand.target != f.target
                and _overlaps(occ0, occ1, *_occupied(f))
            ):
                return False
        if cand.kind == TAKEOVER:
            for f in board.faults:
                if (
                    f.kind == KILL
                    and f.target in SINKS
                    and f.target != cand.target
                    and _overlaps(occ0, occ1, *_occupied(f))
                ):
                    return False
    elif cand.kind in (KAFKA_RESTART, PG_RESTART):
        # One infrastructure restart at a time, with some calm in between.
        gap = 5.0
        if board.busy((KAFKA_RESTART, PG_RESTART), occ0 - gap, occ1 + gap):
            return False
    elif (cand.kind in SIM_WINDOWS or cand.kind == TOPIC_GARBAGE) and board.busy(
        (cand.kind,), occ0, occ1
    ):
        return False
    # Malformed-frame windows: nothing that cuts the producer off its frames near them.
    for f in board.faults:
        if f.kind == WS_MALFORMED and _cuts_frames(cand, *_malformed_zone(f)):
            return False
    if cand.kind == WS_MALFORMED:
        z0, z1 = _malformed_zone(cand)
        if any(_cuts_frames(f, z0, z1) for f in board.faults):
            return False
    return True


def _place(
    board: _Board,
    rng: random.Random,
    horizon: float,
    make: Callable[[float], Fault],
    what: str,
) -> None:
    """Draw start times until ``make(at_s)`` fits; raise PlanError after many tries."""
    for _ in range(5000):
        cand = make(round(rng.uniform(2.0, horizon), 1))
        if _fits(board, cand, horizon):
            board.faults.append(cand)
            return
    raise PlanError(f"cannot place {what} in {horizon:.0f}s under the constraints")


def _window_value(kind: str, rng: random.Random) -> float:
    if kind == REST_429:
        return round(rng.uniform(0.3, 0.7), 2)  # share of REST requests answered 429
    if kind == REST_5XX:
        return round(rng.uniform(0.3, 0.7), 2)
    if kind == WS_DROP:
        return round(rng.uniform(1.5, 4.0), 1)  # abort each connection this long after open
    if kind == WS_STALL:
        return 1.0
    if kind == WS_SKIP:
        return round(rng.uniform(0.1, 0.4), 2)
    if kind == WS_DUPLICATE:
        return round(rng.uniform(0.1, 0.4), 2)
    if kind == WS_MALFORMED:
        return round(rng.uniform(0.01, 0.04), 3)
    raise ValueError(f"not a simulator window: {kind}")


def plan_faults(seed: int, profile: Profile) -> list[Fault]:
    """Every fault of ``profile`` placed in ``[0, profile.duration_s)``, sorted by time.

    The most constrained faults are placed first (take-over, restarts, malformed windows), so
    that a profile that fits for one seed fits for all of them.
    """
    rng = random.Random(seed)  # noqa: S311 - a schedule, not cryptography
    horizon = profile.duration_s
    board = _Board()
    if profile.takeover:
        target = rng.choice(SINKS)
        make = partial(Fault, kind=TAKEOVER, target=target, duration_s=TAKEOVER_DOWN_S)
        _place(board, rng, horizon, make, "the sink take-over")
    for mode in profile.kafka_restarts:
        make = partial(
            Fault, kind=KAFKA_RESTART, target="kafka", duration_s=INFRA_SLOT_S, mode=mode
        )
        _place(board, rng, horizon, make, "a broker restart")
    for mode in profile.pg_restarts:
        make = partial(
            Fault, kind=PG_RESTART, target="postgres", duration_s=INFRA_SLOT_S, mode=mode
        )
        _place(board, rng, horizon, make, "a database restart")
    for kind in (WS_MALFORMED, *[k for k in SIM_WINDOWS if k != WS_MALFORMED]):
        for _ in range(profile.windows.get(kind, 0)):
            length = round(rng.uniform(*profile.window_s), 1)
            value = _window_value(kind, rng)
            make = partial(Fault, kind=kind, duration_s=length, value=value)
            _place(board, rng, horizon, make, f"a {kind} window")
    kills = [s for s in SERVICES for _ in range(profile.kills.get(s, 0))]
    rng.shuffle(kills)
    for service in kills:
        down = round(rng.uniform(*profile.kill_down_s), 1)
        make = partial(Fault, kind=KILL, target=service, duration_s=down)
        _place(board, rng, horizon, make, f"a kill of {service}")
    for _ in range(profile.garbage):
        make = partial(
            Fault, kind=TOPIC_GARBAGE, duration_s=1.0, value=float(profile.garbage_records)
        )
        _place(board, rng, horizon, make, "a topic-garbage injection")
    return sorted(board.faults, key=lambda f: (f.at_s, f.kind, f.target or ""))


def count_by_kind(faults: Sequence[Fault]) -> dict[str, int]:
    counts = {kind: 0 for kind in ALL_KINDS}
    for f in faults:
        counts[f.kind] += 1
    return counts


# -- simulator patches ------------------------------------------------------------------------


def sim_patch(fault: Fault, *, on: bool) -> dict[str, Any]:
    """The ``POST /sim/faults`` body that starts (``on``) or ends a simulator window."""
    kind, v = fault.kind, fault.value
    if kind == REST_429:
        return {"rest_429_rate": v if on else 0.0, "rest_retry_after_s": 1}
    if kind == REST_5XX:
        return {"rest_5xx_rate": v if on else 0.0}
    if kind == WS_DROP:
        return {"ws_drop_every_s": v if on else 0.0}
    if kind == WS_STALL:
        return {"ws_stall": on}
    if kind == WS_SKIP:
        return {"ws_skip_close_rate": v if on else 0.0}
    if kind == WS_DUPLICATE:
        return {"ws_duplicate_close_rate": v if on else 0.0}
    if kind == WS_MALFORMED:
        return {"ws_malformed_rate": v if on else 0.0}
    raise ValueError(f"{kind} is not a simulator window")


# -- data faults (present from the start) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class DataFaults:
    """Exchange-side data faults, given to the simulator at start (``--faults``)."""

    empty_ranges: tuple[tuple[str, int, int], ...]  # (symbol, start_ms, end_ms)
    corrected: tuple[tuple[str, str, int], ...]  # (symbol, interval, open_time)
    archive_missing: tuple[str, ...]  # zip names
    archive_corrupt: tuple[str, ...]

    def sim_faults(self, seed: int) -> dict[str, Any]:
        return {
            "empty_ranges": [{"symbol": s, "start": a, "end": b} for s, a, b in self.empty_ranges],
            "corrected": [
                {"symbol": s, "interval": i, "open_time": t} for s, i, t in self.corrected
            ],
            "archive_missing": list(self.archive_missing),
            "archive_corrupt": list(self.archive_corrupt),
            "seed": seed,
        }

    def corrected_set(self) -> frozenset[tuple[str, str, int]]:
        return frozenset(self.corrected)


def archive_days(start_ms: int, sim_start_ms: int) -> list[int]:
    """Day starts whose daily archive file the backfiller finds published at ``sim_start_ms``
    (the simulator publishes a day's file 8.5 h after the day; the planner waits 10 h)."""
    days = []
    day = align_open("1d", start_ms)
    while day + DAY_MS + 10 * 3_600_000 <= sim_start_ms:
        if day >= start_ms:
            days.append(day)
        day += DAY_MS
    return days


def plan_data_faults(
    seed: int,
    pairs: Sequence[Pair],
    history_start_ms: int,
    sim_start_ms: int,
    live_span_ms: int,
    corrected: int,
) -> DataFaults:
    """Pick the data faults from ``pairs``: 1m pairs only (the archive and the empty ranges
    are per minute), the live ones inside the first 60 % of the live window."""
    rng = random.Random(seed * 7919 + 17)  # noqa: S311 - a choice, not cryptography
    minute_pairs = sorted({p for p in pairs if p.interval == "1m"})
    if len(minute_pairs) < 4:
        raise PlanError("the data faults need at least four 1m pairs")
    hist_sym, live_sym, missing_sym, corrupt_sym = (p.symbol for p in rng.sample(minute_pairs, 4))
    # An exchange-empty range in the history (1-3 h) and one in the live window (10-40 min).
    hist_len = rng.randint(60, 180) * MINUTE_MS
    hist_start = align_open("1m", rng.randint(history_start_ms, sim_start_ms - 2 * hist_len))
    live_len = rng.randint(10, 40) * MINUTE_MS
    live_lo = sim_start_ms + live_span_ms // 10
    live_hi = sim_start_ms + live_span_ms * 6 // 10
    live_start = align_open("1m", rng.randint(live_lo, max(live_lo, live_hi - live_len)))
    empty = (
        (hist_sym, hist_start, hist_start + hist_len),
        (live_sym, live_start, live_start + live_len),
    )
    # Corrected candles: the WS frame says one thing, REST (the truth) another.
    fixes: list[tuple[str, str, int]] = []
    candidates = sorted(pairs)
    while len(fixes) < corrected:
        pair = rng.choice(candidates)
        lo = sim_start_ms + live_span_ms // 20
        hi = sim_start_ms + live_span_ms * 8 // 10
        t = align_open(pair.interval, rng.randint(lo, hi))
        if t < lo:
            continue
        if any(s == pair.symbol and a <= t < b for s, a, b in empty):
            continue
        ref = (pair.symbol, pair.interval, t)
        if ref not in fixes:
            fixes.append(ref)
    days = archive_days(history_start_ms, sim_start_ms)
    if not days:
        raise PlanError("the history has no published daily archive file")
    missing_day, corrupt_day = rng.choice(days), rng.choice(days)
    return DataFaults(
        empty_ranges=empty,
        corrected=tuple(sorted(fixes)),
        archive_missing=(_zip_name(missing_sym, missing_day),),
        archive_corrupt=(_zip_name(corrupt_sym, corrupt_day),),
    )


def _zip_name(symbol: str, day_ms: int) -> str:
    stamp = datetime.fromtimestamp(day_ms / 1000, tz=UTC).strftime("%Y-%m-%d")
    return f"{symbol}-1m-{stamp}.zip"
