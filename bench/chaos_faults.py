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
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

from qryptify.pairs import DAY_MS, FIXED_INTERVAL_MS, MINUTE_MS, Pair, align_open

# Fault kinds ------------------------------------------------------------------------------
KILL = "kill9"  # SIGKILL one service, restart it after down_s
TAKEOVER = "kill9_takeover"  # SIGKILL a sink and keep it down past the session timeout
#: Mode "restart" (supervisorctl) or "kill9" (SIGKILL the JVM); with three brokers also
#: "leader_kill9" (SIGKILL the leader of the topic's partition 0), "controller_kill9" (SIGKILL
#: the active KRaft controller) and "rolling" (restart every node in turn, each back in sync
#: before the next).
KAFKA_RESTART = "kafka_restart"
THREE_BROKER_MODES = ("leader_kill9", "controller_kill9", "rolling")
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
TAKEOVER_DOWN_S = SESSION_TIMEOUT_S + 13.0
#: Seconds one broker / database restart occupies (stop, start, clients reconnecting); a
#: graceful broker stop alone can take half a minute on a busy machine.
KAFKA_SLOT_S = 40.0
PG_SLOT_S = 20.0
#: A rolling restart of three nodes: each stops, starts and catches up before the next.
ROLLING_SLOT_S = 100.0
#: Around a malformed-frame window nothing may cut the producer off its frames.
MALFORMED_GUARD_BEFORE_S = 15.0
MALFORMED_GUARD_AFTER_S = 10.0
#: What cuts the producer off its frames (besides killing it).
_FRAME_CUTTERS = (WS_DROP, WS_STALL, KAFKA_RESTART)
#: Windows that act on the producer's WebSocket connections.
_WS_WINDOWS = (WS_DROP, WS_STALL, WS_SKIP, WS_DUPLICATE, WS_MALFORMED)


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
    duration_s=105.0,
    kills={"backfiller": 2, "producer": 2},
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


def profile_for(name: str, brokers: int) -> Profile:
    """The profile for a cluster of ``brokers``: with three, the broker faults become a kill
    -9 of a partition leader and of the active controller and a rolling restart (the full
    run keeps its single-node kill -9 as well), over a longer quick run for the extra slots."""
    profile = PROFILES[name]
    if brokers < 3:
        return profile
    if name == "quick":
        return replace(profile, duration_s=300.0, kafka_restarts=THREE_BROKER_MODES)
    return replace(profile, kafka_restarts=(*THREE_BROKER_MODES, "kill9"))


# -- placement --------------------------------------------------------------------------------


def _overlaps(a0: float, a1: float, b0: float, b1: float) -> bool:
    return a0 < b1 and b0 < a1


@dataclass(slots=True)
class _Board:
    """The faults placed so far."""

    faults: list[Fault] = field(default_factory=list)


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


def _conflict_one_way(x: Fault, y: Fault) -> bool:
    """Does ``y`` break what ``x`` needs? (``conflicts`` asks both ways.)"""
    x0, x1 = _occupied(x)
    y0, y1 = _occupied(y)
    killed = (KILL, TAKEOVER)
    # A service is not killed while it is down.
    if x.kind in killed and y.kind in killed and x.target == y.target and _overlaps(x0, x1, y0, y1):
        return True
    # A stalled connection is replaced by the producer before a drop could hit it.
    if {x.kind, y.kind} == {WS_DROP, WS_STALL} and _overlaps(x0 - 3.0, x1 + 3.0, y0, y1):
        return True
    # One value per simulator flag.
    if x.kind == y.kind and x.kind in (*SIM_WINDOWS, TOPIC_GARBAGE) and _overlaps(x0, x1, y0, y1):
        return True
    # One infrastructure restart at a time, with some calm in between.
    restarts = (KAFKA_RESTART, PG_RESTART)
    if x.kind in restarts and y.kind in restarts and _overlaps(x0 - 5.0, x1 + 5.0, y0, y1):
        return True
    if x.kind == TAKEOVER:
        # The group must be stable when the sink goes, and the other sink alive to take over.
        sink_down = y.kind in killed and y.target in SINKS and y is not x
        if sink_down and _overlaps(x.at_s - SESSION_TIMEOUT_S - 5.0, x1, y0, y1):
            return True
        # A broker restart resets the session timers the take-over is waiting for.
        if y.kind == KAFKA_RESTART and _overlaps(
            x.at_s - 10.0, x.at_s + SESSION_TIMEOUT_S + 5.0, y0, y1
        ):
            return True
    if x.kind == WS_MALFORMED and _cuts_frames(y, *_malformed_zone(x)):
        return True
    # A WebSocket fault needs a producer that is up to suffer it (a restarting producer also
    # waits for a restarting broker).
    producer_away = (y.kind == KILL and y.target == "producer") or y.kind == KAFKA_RESTART
    return x.kind in _WS_WINDOWS and producer_away and _overlaps(x0, x1, y0, y1)


def conflicts(a: Fault, b: Fault) -> bool:
    """True when ``a`` and ``b`` cannot both be in the schedule."""
    return _conflict_one_way(a, b) or _conflict_one_way(b, a)


def _fits(board: _Board, cand: Fault, horizon: float) -> bool:
    _occ0, occ1 = _occupied(cand)
    if cand.at_s < 0 or occ1 > horizon:
        return False
    # A killed sink's partitions wait for its session to time out (its successor joins as a
    # new member): let that happen inside the phase, not in the quiescence wait.
    if cand.kind == KILL and cand.target in SINKS and cand.end_s + SESSION_TIMEOUT_S > horizon:
        return False
    return not any(conflicts(cand, f) for f in board.faults)


def _place(
    board: _Board,
    rng: random.Random,
    horizon: float,
    make: Callable[[float], Fault],
    what: str,
) -> None:
    """Draw start times until ``make(at_s)`` fits; raise PlanError after many tries."""
    for _ in range(2000):
        cand = make(round(rng.uniform(2.0, horizon), 1))
        if _fits(board, cand, horizon):
            board.faults.append(cand)
            return
    raise PlanError(f"cannot place {what} in {horizon:.0f}s under the constraints")


def _window_value(kind: str, rng: random.Random) -> float:
    if kind == REST_429:
        return float(rng.randint(10, 30))  # the next N REST requests are answered 429
    if kind == REST_5XX:
        return float(rng.randint(10, 30))  # ... answered 503 / 500 / 502 in turn
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

    The most constrained faults are placed first (sink kills, the take-over, restarts,
    malformed windows). A draw that paints itself into a corner is redrawn from a seed derived
    from ``seed``, so the result is still a function of ``seed`` alone.
    """
    last: PlanError | None = None
    for attempt in range(100):
        rng = random.Random(seed * 1_000_003 + attempt)  # noqa: S311 - a schedule
        try:
            return _plan(rng, profile)
        except PlanError as exc:
            last = exc
    assert last is not None  # noqa: S101 - the loop ran
    raise last


def _plan(rng: random.Random, profile: Profile) -> list[Fault]:
    horizon = profile.duration_s
    board = _Board()
    kills = [s for s in SERVICES for _ in range(profile.kills.get(s, 0))]
    rng.shuffle(kills)
    kills.sort(key=lambda s: s not in SINKS)  # sinks first: they have a deadline
    downs = [round(rng.uniform(*profile.kill_down_s), 1) for _ in kills]
    for service, down in zip(kills, downs, strict=True):
        if service in SINKS:
            make = partial(Fault, kind=KILL, target=service, duration_s=down)
            _place(board, rng, horizon, make, f"a kill of {service}")
    if profile.takeover:
        target = rng.choice(SINKS)
        make = partial(Fault, kind=TAKEOVER, target=target, duration_s=TAKEOVER_DOWN_S)
        _place(board, rng, horizon, make, "the sink take-over")
    for mode in profile.kafka_restarts:
        slot = ROLLING_SLOT_S if mode == "rolling" else KAFKA_SLOT_S
        make = partial(Fault, kind=KAFKA_RESTART, target="kafka", duration_s=slot, mode=mode)
        _place(board, rng, horizon, make, "a broker restart")
    for mode in profile.pg_restarts:
        make = partial(Fault, kind=PG_RESTART, target="postgres", duration_s=PG_SLOT_S, mode=mode)
        _place(board, rng, horizon, make, "a database restart")
    for kind in (WS_MALFORMED, *[k for k in SIM_WINDOWS if k != WS_MALFORMED]):
        for _ in range(profile.windows.get(kind, 0)):
            length = round(rng.uniform(*profile.window_s), 1)
            value = _window_value(kind, rng)
            make = partial(Fault, kind=kind, duration_s=length, value=value)
            _place(board, rng, horizon, make, f"a {kind} window")
    for service, down in zip(kills, downs, strict=True):
        if service not in SINKS:
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
    # REST storms are counts: they hit the next requests whenever those come (a backfiller
    # between passes or restarting sends none), and whatever is left is cleared at the end.
    if kind == REST_429:
        return {"rest_429_next": int(v), "rest_retry_after_s": 1} if on else {}
    if kind == REST_5XX:
        return {"rest_5xx_next": int(v)} if on else {}
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


# -- data faults ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DataFaults:
    """Exchange-side data faults.

    The history ones are absolute times, given to the simulator at start (``--faults``). The
    live ones are placed in phase seconds (``at_s``) and turned into exchange times when the
    fault phase begins (``live_patch``): a corrected candle must close while the producer is
    connected and receiving, or its WebSocket value would never be seen.
    """

    history_empty: tuple[str, int, int]  # (symbol, start_ms, end_ms)
    live_empty: tuple[str, float, int]  # (symbol, at_s, minutes)
    corrected: tuple[tuple[str, str, float], ...]  # (symbol, interval, at_s)
    archive_missing: tuple[str, ...]  # zip names
    archive_corrupt: tuple[str, ...]

    def start_faults(self, seed: int) -> dict[str, Any]:
        """The simulator's ``--faults`` at start."""
        symbol, start, end = self.history_empty
        return {
            "empty_ranges": [{"symbol": symbol, "start": start, "end": end}],
            "archive_missing": list(self.archive_missing),
            "archive_corrupt": list(self.archive_corrupt),
            "seed": seed,
        }

    def live_times(
        self, phase_start_ms: int, speed: float
    ) -> tuple[tuple[str, int, int], tuple[tuple[str, str, int], ...]]:
        """(live empty range, corrected candles) in exchange ms for a phase starting then."""

        def at(seconds: float) -> int:
            return phase_start_ms + int(seconds * speed * 1000)

        symbol, at_s, minutes = self.live_empty
        start = align_open("1m", at(at_s)) + MINUTE_MS
        empty = (symbol, start, start + minutes * MINUTE_MS)
        fixes = tuple(sorted({(s, i, align_open(i, at(t))) for s, i, t in self.corrected}))
        return empty, fixes

    def live_patch(self, phase_start_ms: int, speed: float) -> dict[str, Any]:
        """The ``POST /sim/faults`` body that adds the live faults (keeps the history range)."""
        empty, fixes = self.live_times(phase_start_ms, speed)
        return {
            "empty_ranges": [
                {"symbol": s, "start": a, "end": b} for s, a, b in (self.history_empty, empty)
            ],
            "corrected": [{"symbol": s, "interval": i, "open_time": t} for s, i, t in fixes],
        }


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


#: What keeps a WebSocket close frame from reaching the producer.
_WS_BLINDERS = (WS_DROP, WS_STALL, WS_SKIP)


def ws_calm(faults: Sequence[Fault], t0: float, t1: float) -> bool:
    """No fault keeps the producer from receiving and publishing a close in ``[t0, t1)``.

    A producer restarted while the broker restarts waits for the broker (its start creates
    the topics), so such a kill keeps it away until the broker is back.
    """
    restarts = [f for f in faults if f.kind == KAFKA_RESTART]
    for f in faults:
        if f.kind in _WS_BLINDERS and _overlaps(t0, t1, f.at_s, f.end_s):
            return False
        if f.kind == KILL and f.target == "producer":
            down0, down1 = _occupied(f)
            for k in restarts:
                if _overlaps(down0, down1, k.at_s, k.end_s):
                    down1 = max(down1, k.end_s + STARTUP_S)
            if _overlaps(t0, t1, down0, down1):
                return False
    return True


def plan_data_faults(
    seed: int,
    pairs: Sequence[Pair],
    history_start_ms: int,
    sim_start_ms: int,
    faults: Sequence[Fault],
    profile: Profile,
    corrected: int,
    speed: float,
    late_listed: Collection[str] = (),
) -> DataFaults:
    """Pick the data faults from ``pairs`` (1m pairs for the per-minute ones): an empty range in
    the history and one early in the live window, ``corrected`` candles closing at calm
    moments for the WebSocket, a missing and a corrupt daily archive file."""
    rng = random.Random(seed * 7919 + 17)  # noqa: S311 - a choice, not cryptography
    # Symbols listed during the history have no archive file for its first days.
    minute_pairs = sorted({p for p in pairs if p.interval == "1m" and p.symbol not in late_listed})
    if len(minute_pairs) < 4:
        raise PlanError("the data faults need at least four 1m pairs")
    hist_sym, live_sym, missing_sym, corrupt_sym = (p.symbol for p in rng.sample(minute_pairs, 4))
    hist_len = rng.randint(60, 180) * MINUTE_MS
    hist_start = align_open("1m", rng.randint(history_start_ms, sim_start_ms - 2 * hist_len))
    horizon = profile.duration_s
    live_empty = (live_sym, round(rng.uniform(0.1, 0.5) * horizon, 1), rng.randint(10, 30))
    fixes: list[tuple[str, str, float]] = []
    candidates = sorted(pairs)
    for _ in range(20_000):
        if len(fixes) >= corrected:
            break
        pair = rng.choice(candidates)
        at_s = round(rng.uniform(0.05, 0.75) * horizon, 1)
        # The candle holding at_s closes at most one interval (in wall seconds) later; its
        # close frame must find the producer connected, a few seconds either side.
        wall_s = interval_seconds(pair.interval) / speed
        if not ws_calm(faults, at_s - 3.0, at_s + wall_s + 5.0):
            continue
        if pair.symbol == live_sym:
            continue
        if all((s, i) != (pair.symbol, pair.interval) for s, i, _ in fixes):
            fixes.append((pair.symbol, pair.interval, at_s))
    if len(fixes) < corrected:
        raise PlanError(f"cannot place {corrected} corrected candles at calm moments")
    days = archive_days(history_start_ms, sim_start_ms)
    if not days:
        raise PlanError("the history has no published daily archive file")
    missing_day, corrupt_day = rng.choice(days), rng.choice(days)
    return DataFaults(
        history_empty=(hist_sym, hist_start, hist_start + hist_len),
        live_empty=live_empty,
        corrected=tuple(fixes),
        archive_missing=(_zip_name(missing_sym, missing_day),),
        archive_corrupt=(_zip_name(corrupt_sym, corrupt_day),),
    )


def interval_seconds(interval: str) -> float:
    return FIXED_INTERVAL_MS[interval] / 1000


def _zip_name(symbol: str, day_ms: int) -> str:
    stamp = datetime.fromtimestamp(day_ms / 1000, tz=UTC).strftime("%Y-%m-%d")
    return f"{symbol}-1m-{stamp}.zip"
