"""`stack up` waits until each service stayed up; a crash-looping one fails it (pure)."""

from __future__ import annotations

from typing import Any

from stack.startup import StartWatch, last_lines


def info(state: str, start: int, now: int, status: int = 0) -> dict[str, Any]:
    return {"statename": state, "start": start, "now": now, "exitstatus": status}


def test_a_program_is_up_once_it_ran_long_enough() -> None:
    watch = StartWatch(("sink",), hold_s=8)
    assert watch.observe({"sink": info("STARTING", 100, 101)}) == (set(), {})
    assert watch.observe({"sink": info("RUNNING", 100, 106)}) == (set(), {})
    assert watch.observe({"sink": info("RUNNING", 100, 108)}) == ({"sink"}, {})


def test_two_exits_fail_it_and_one_exit_is_counted_once() -> None:
    watch = StartWatch(("backfiller", "sink"), hold_s=8)
    snapshot = {"backfiller": info("BACKOFF", 100, 101, 2), "sink": info("RUNNING", 100, 101)}
    assert watch.observe(snapshot) == (set(), {})
    assert watch.observe(snapshot) == (set(), {})  # the same exit seen twice
    up, failed = watch.observe(
        {"backfiller": info("BACKOFF", 103, 104, 2), "sink": info("RUNNING", 100, 109)}
    )
    assert up == {"sink"}
    assert failed == {"backfiller": "exited 2 times, last exit status 2"}


def test_fatal_and_unknown_programs_fail() -> None:
    watch = StartWatch(("producer", "sim"))
    _, failed = watch.observe({"producer": info("FATAL", 100, 130, 1)})
    assert failed["producer"] == "kept exiting at start (FATAL, last exit status 1)"
    assert failed["sim"] == "not known to supervisord"


def test_an_exit_after_running_counts_too() -> None:
    watch = StartWatch(("producer",), hold_s=30, max_exits=2)
    watch.observe({"producer": info("RUNNING", 100, 110)})
    watch.observe({"producer": info("BACKOFF", 100, 112, 1)})
    _, failed = watch.observe({"producer": info("EXITED", 113, 120, 1)})
    assert failed == {"producer": "exited 2 times, last exit status 1"}


def test_last_lines() -> None:
    assert last_lines([f"{i}\n" for i in range(10)], 3) == ["7", "8", "9"]
    assert last_lines(["a\n"], 3) == ["a"]


def test_an_exit_status_of_0_is_not_shown() -> None:
    watch = StartWatch(("sink",))
    watch.observe({"sink": info("BACKOFF", 100, 101, 0)})
    _, failed = watch.observe({"sink": info("BACKOFF", 102, 103, 0)})
    assert failed == {"sink": "exited 2 times"}
