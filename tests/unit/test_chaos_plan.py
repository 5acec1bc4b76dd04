"""The chaos run's pure parts: the seeded fault schedule (chaos.faults) and the checker
(chaos.check). The schedule is checked against the constraints independently of the
planner's own predicate; the checker is fed hand-made observations, violations included."""

from __future__ import annotations

import itertools
import json

import pytest

from chaos.check import (
    KIND_KLINE,
    KIND_REJECT,
    CommitAudit,
    Entry,
    Exit,
    SyncStateTracker,
    TopicIndex,
    audit_topic,
    crash_loop,
    entry_from_event,
    kline_value,
    render_table,
    rest_row_value,
)
from chaos.faults import (
    ALL_KINDS,
    FULL,
    KAFKA_RESTART,
    KILL,
    PG_RESTART,
    QUICK,
    SESSION_TIMEOUT_S,
    SIM_WINDOWS,
    SINKS,
    STARTUP_S,
    TAKEOVER,
    WS_DROP,
    WS_MALFORMED,
    WS_STALL,
    Fault,
    Profile,
    conflicts,
    count_by_kind,
    plan_data_faults,
    plan_faults,
    sim_patch,
    ws_calm,
)
from qryptify.kline import EmptyRange, Kline
from qryptify.pairs import Pair
from sim.archive import parse_archive_path
from sim.faults import Faults, load_faults
from tests.conftest import make_kline

SEEDS = range(12)
HISTORY = 1_720_656_000_000  # 2024-07-11
SIM_START = 1_720_785_600_000  # 2024-07-12T12:00Z
PAIRS = [Pair(f"CH{i:03d}USDT", "1m") for i in range(12)] + [
    Pair("CH000USDT", "5m"),
    Pair("CH001USDT", "15m"),
]


def down_until(f: Fault) -> float:
    return f.end_s + STARTUP_S


def overlap(a0: float, a1: float, b0: float, b1: float) -> bool:
    return a0 < b1 and b0 < a1


# -- the schedule -------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", [QUICK, FULL], ids=["quick", "full"])
def test_the_same_seed_gives_the_same_schedule_and_another_seed_another(profile: Profile) -> None:
    assert plan_faults(7, profile) == plan_faults(7, profile)
    assert plan_faults(7, profile) != plan_faults(8, profile)


def test_the_full_run_has_what_the_issue_asks_for() -> None:
    for seed in SEEDS:
        faults = plan_faults(seed, FULL)
        counts = count_by_kind(faults)
        assert counts[KILL] + counts[TAKEOVER] >= 20
        assert counts[TAKEOVER] == 1
        assert counts[KAFKA_RESTART] >= 3 and counts[PG_RESTART] >= 3
        assert all(counts[kind] >= 1 for kind in SIM_WINDOWS)
        killed = {f.target for f in faults if f.kind in (KILL, TAKEOVER)}
        assert killed == {"backfiller", "producer", "sink-a", "sink-b"}


def test_the_quick_run_has_every_kind_of_fault_at_least_once() -> None:
    for seed in SEEDS:
        counts = count_by_kind(plan_faults(seed, QUICK))
        assert all(counts[kind] >= 1 for kind in ALL_KINDS), counts
        killed = {f.target for f in plan_faults(seed, QUICK) if f.kind in (KILL, TAKEOVER)}
        assert {"backfiller", "producer"} <= killed and killed & set(SINKS)


@pytest.mark.parametrize("profile", [QUICK, FULL], ids=["quick", "full"])
def test_every_schedule_keeps_the_constraints(profile: Profile) -> None:
    for seed in SEEDS:
        faults = plan_faults(seed, profile)
        assert faults == sorted(faults, key=lambda f: (f.at_s, f.kind, f.target or ""))
        for f in faults:
            assert f.at_s >= 0
            end = down_until(f) if f.kind in (KILL, TAKEOVER) else f.end_s
            assert end <= profile.duration_s, f
            if f.kind == KILL and f.target in SINKS:  # its session times out inside the phase
                assert f.end_s + SESSION_TIMEOUT_S <= profile.duration_s
        for a, b in itertools.combinations(faults, 2):
            assert not conflicts(a, b), (a, b)
            _check_pair(a, b)
            _check_pair(b, a)


def _check_pair(a: Fault, b: Fault) -> None:
    """The constraints, restated independently of the planner."""
    if a.kind in (KILL, TAKEOVER) and b.kind in (KILL, TAKEOVER) and a.target == b.target:
        assert not overlap(a.at_s, down_until(a), b.at_s, down_until(b)), (a, b)
    if a.kind == b.kind and a.kind in SIM_WINDOWS:
        assert not overlap(a.at_s, a.end_s, b.at_s, b.end_s), (a, b)
    if (a.kind, b.kind) == (WS_DROP, WS_STALL):  # the producer replaces stalled connections
        assert not overlap(a.at_s, a.end_s, b.at_s, b.end_s), (a, b)
    if a.kind in (KAFKA_RESTART, PG_RESTART) and b.kind in (KAFKA_RESTART, PG_RESTART):
        assert not overlap(a.at_s, a.end_s, b.at_s, b.end_s), (a, b)
    if a.kind == TAKEOVER and b.kind in (KILL, TAKEOVER) and b.target in SINKS:
        assert not overlap(a.at_s - SESSION_TIMEOUT_S, down_until(a), b.at_s, down_until(b))
    if a.kind == WS_MALFORMED:
        producer_down = b.kind == KILL and b.target == "producer"
        if producer_down or b.kind in (WS_DROP, WS_STALL, KAFKA_RESTART):
            b_end = down_until(b) if producer_down else b.end_s
            assert not overlap(a.at_s - 10, a.end_s + 5, b.at_s, b_end), (a, b)


def test_simulator_patches_are_flags_the_simulator_accepts() -> None:
    for f in plan_faults(3, FULL):
        if f.kind in SIM_WINDOWS:
            on, off = sim_patch(f, on=True), sim_patch(f, on=False)
            assert on
            Faults().updated(on).updated(off)  # raises FaultError if not understood


def test_data_faults_are_realistic_and_accepted_by_the_simulator() -> None:
    for seed in SEEDS:
        faults = plan_faults(seed, QUICK)
        data = plan_data_faults(seed, PAIRS, HISTORY, SIM_START, faults, QUICK, 3, 60.0)
        load_faults(json.dumps(data.start_faults(seed)))
        Faults().updated(data.live_patch(SIM_START, 60.0))
        symbol, start, end = data.history_empty
        assert HISTORY <= start < end <= SIM_START
        for name in (*data.archive_missing, *data.archive_corrupt):
            symbol = name.split("-")[0]
            path = f"/data/futures/um/daily/klines/{symbol}/1m/{name}"
            assert parse_archive_path(path) is not None, name
        assert len({(s, i) for s, i, _ in data.corrected}) == 3
        for _symbol, interval, at_s in data.corrected:
            wall = {"1m": 1.0, "5m": 5.0, "15m": 15.0}[interval]
            assert ws_calm(faults, at_s - 3, at_s + wall + 5)
        live_empty, fixes = data.live_times(SIM_START, 60.0)
        assert live_empty[1] > SIM_START and all(t >= SIM_START for _s, _i, t in fixes)


def test_ws_calm_sees_what_blinds_the_producer() -> None:
    kill = Fault(10.0, KILL, "producer", 2.0)
    assert not ws_calm([kill], 15.0, 16.0)  # still starting up
    assert ws_calm([kill], 21.0, 30.0)
    assert not ws_calm([Fault(0.0, WS_STALL, None, 5.0, 1.0)], 4.0, 6.0)
    assert ws_calm([Fault(0.0, KILL, "backfiller", 5.0)], 1.0, 3.0)


# -- the checker --------------------------------------------------------------------------------


def test_sync_state_tracker_flags_a_decrease_and_a_vanished_row() -> None:
    tracker = SyncStateTracker()
    assert tracker.observe({("A", "1m"): 100, ("B", "1m"): 50}, 1.0) == []
    assert tracker.observe({("A", "1m"): 100, ("B", "1m"): 60}, 2.0) == []
    found = tracker.observe({("A", "1m"): 90}, 3.0)
    assert {(d.pair, d.before_ms, d.after_ms) for d in found} == {
        (("A", "1m"), 100, 90),
        (("B", "1m"), 60, -1),
    }
    assert tracker.highest[("A", "1m")] == 100 and tracker.samples == 3


def _index(*entries: tuple[int, Entry]) -> TopicIndex:
    index = TopicIndex()
    for partition, entry in entries:
        index.add(partition, entry)
    return index


def test_commit_audit_accepts_rows_with_the_record_or_a_later_value() -> None:
    k1 = make_kline(open_time=1_720_656_000_000, close="42000.5")
    k2 = make_kline(open_time=1_720_656_000_000, close="42010.0")  # a correction, later
    e1, e2 = entry_from_event(0, k1), entry_from_event(1, k2)
    index = _index((0, e1), (0, e2))
    audit = CommitAudit()
    wanted = audit.wanted(index, {0: 1})
    assert [e.offset for e in wanted[0]] == [0]
    # The DB already holds the later value: fine once the whole topic is known.
    assert audit.settle({0: 1}, wanted, {e1.ident: e2.value}, {}, 1.0) == []
    assert audit.checked == {0: 1}
    assert audit.finish(index, set()) == []


def test_commit_audit_flags_a_committed_record_missing_from_the_db() -> None:
    k = make_kline()
    index = _index((2, entry_from_event(0, k)), (2, entry_from_event(1, make_kline(
        open_time=k.open_time + 60_000))))  # fmt: skip
    audit = CommitAudit()
    found = audit.settle({2: 2}, audit.wanted(index, {2: 2}), {}, {}, 5.0)
    assert [(v.partition, v.committed, v.offset, v.why) for v in found] == [
        (2, 2, 0, "no row"),
        (2, 2, 1, "no row"),
    ]


def test_commit_audit_flags_an_older_value_and_a_reject_missing_from_the_dlq() -> None:
    old = make_kline(close="42000.5")
    new = make_kline(close="42010.0")
    e_old, e_new = entry_from_event(0, old), entry_from_event(1, new)
    e_bad = entry_from_event(2, None)
    index = _index((0, e_old), (0, e_new), (0, e_bad))
    audit = CommitAudit()
    wanted = audit.wanted(index, {0: 3})
    # After offset 1 was committed the DB still had the value of offset 0: stale.
    assert audit.settle({0: 3}, wanted, {e_old.ident: e_old.value}, {}, 1.0) == []
    found = audit.finish(index, dlq=set())
    assert sorted(v.why for v in found) == ["not in DLQ", "older value"]
    assert audit.finish(index, dlq={(0, 2)}) != []  # the older value stays a violation


def test_commit_audit_checks_empty_ranges_and_skips_what_the_reader_has_not_seen() -> None:
    rng = EmptyRange("A", "1m", 1_000_000_000_000, 1_000_000_600_000, 1)
    e = entry_from_event(0, rng)
    index = _index((1, e))
    audit = CommitAudit()
    wanted = audit.wanted(index, {1: 5})  # committed beyond what the reader read
    assert [x.offset for x in wanted[1]] == [0]
    found = audit.settle({1: 5}, wanted, {}, {e.ident: rng.end_time - 60_000}, 1.0)
    assert [v.why for v in found] == ["no empty range"]
    assert audit.checked[1] == 1  # offsets 1..4 are checked when the reader has them


def test_audit_topic_separates_open_candles_corrections_and_fabrications() -> None:
    final = make_kline(open_time=1_720_656_000_000)
    truth_row = [final.open_time, final.open, final.high, final.low, final.close, final.volume,
                 final.close_time, final.quote_volume, final.trades, final.taker_buy_base,
                 final.taker_buy_quote, "0"]  # fmt: skip
    assert rest_row_value(truth_row) == kline_value(final)
    snapshot = make_kline(open_time=final.open_time, close="41999.0", source="ws")
    later = make_kline(open_time=final.open_time + 60_000)  # never on the exchange
    index = _index(
        (0, entry_from_event(0, final)),
        (0, entry_from_event(1, snapshot)),
        (0, entry_from_event(2, later)),
        (0, entry_from_event(3, EmptyRange("BTCUSDT", "1m", final.open_time, final.open_time
                                           + 120_000, 1))),
    )  # fmt: skip
    truth = {("BTCUSDT", "1m"): {final.open_time: rest_row_value(truth_row)}}
    plain = audit_topic(index, truth, frozenset())
    assert plain.klines == 3 and plain.wrong_value == [(("BTCUSDT", "1m", final.open_time), "ws")]
    assert plain.not_in_truth == [(("BTCUSDT", "1m", later.open_time), "rest")]
    assert len(plain.bad_empty) == 1  # it covers a candle the exchange has
    corrected = audit_topic(index, truth, frozenset({("BTCUSDT", "1m", final.open_time)}))
    assert corrected.wrong_value == [] and corrected.corrected_seen == {
        ("BTCUSDT", "1m", final.open_time)
    }


def test_entries_carry_what_the_sink_must_do() -> None:
    k = make_kline()
    assert entry_from_event(5, k).kind == KIND_KLINE
    assert entry_from_event(6, None) == Entry(6, KIND_REJECT, ("", "", 6), 0)
    assert isinstance(k, Kline)


def test_crash_loop_means_repeated_quick_exits_on_their_own() -> None:
    def exits(*specs: tuple[bool, float]) -> list[Exit]:
        return [Exit("sink-a", i, 1, up, expected) for i, (expected, up) in enumerate(specs)]

    assert crash_loop(exits(*[(False, 2.0)] * 5))
    assert not crash_loop(exits(*[(False, 2.0)] * 4, (True, 1.0), *[(False, 2.0)] * 4))
    assert not crash_loop(exits(*[(False, 60.0)] * 8))  # long runs between exits
    assert not crash_loop(exits(*[(True, 1.0)] * 20))  # killed by the controller


def test_render_table_aligns_text_and_makes_markdown() -> None:
    text = render_table(["a", "bb"], [["xxx", "y"]], markdown=False).splitlines()
    assert text == ["a    bb", "---  --", "xxx  y "]
    md = render_table(["a", "bb"], [["xxx", "y"]], markdown=True).splitlines()
    assert md[0] == "| a | bb |" and md[2] == "| xxx | y |"


def test_the_runs_symbols_are_ones_the_simulator_accepts() -> None:
    from chaos.run import LATE_LISTED, SHAPES, run_pairs, symbol_docs
    from sim.symbols import spec_from_mapping

    for shape in SHAPES.values():
        docs = symbol_docs(shape.symbols, HISTORY)
        specs = [spec_from_mapping(d) for d in docs]  # raises on what the simulator refuses
        assert {s.symbol for s in specs} >= {p.symbol for p in run_pairs(shape)}
        assert LATE_LISTED in {s.symbol for s in specs}
    assert len(run_pairs(SHAPES["full"])) >= 50


def test_the_chaos_stack_ports_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from chaos.run import _env_port

    monkeypatch.delenv("QRYPTIFY_CHAOS_KAFKA_PORT", raising=False)
    assert _env_port("QRYPTIFY_CHAOS_KAFKA_PORT") is None
    monkeypatch.setenv("QRYPTIFY_CHAOS_KAFKA_PORT", "25192")
    assert _env_port("QRYPTIFY_CHAOS_KAFKA_PORT") == 25192
    for bad in ("kafka", "0", "70000"):
        monkeypatch.setenv("QRYPTIFY_CHAOS_KAFKA_PORT", bad)
        with pytest.raises(SystemExit, match="QRYPTIFY_CHAOS_KAFKA_PORT"):
            _env_port("QRYPTIFY_CHAOS_KAFKA_PORT")
