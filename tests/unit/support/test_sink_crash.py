from __future__ import annotations

import pytest

from qryptify.errors import ConfigError
from qryptify.sink.loop import HOOK_POINTS
from tests.support.sink_crash import ENV_CRASH_AT, CrashPoint, crash_hook, parse_crash_at


def test_parse_crash_point() -> None:
    assert parse_crash_at(None) is None
    assert parse_crash_at(" ") is None
    assert parse_crash_at("after_db_commit:3") == CrashPoint("after_db_commit", 3)
    assert parse_crash_at("before_db_commit") == CrashPoint("before_db_commit", 1)
    for bad in ("nowhere:1", "after_db_commit:x", "after_db_commit:0"):
        with pytest.raises(ConfigError, match=ENV_CRASH_AT):
            parse_crash_at(bad)


def test_every_loop_point_can_be_targeted() -> None:
    for point in HOOK_POINTS:
        assert parse_crash_at(f"{point}:2") == CrashPoint(point, 2)


def test_no_hook_without_the_variable() -> None:
    assert crash_hook({}) is None
    hook = crash_hook({ENV_CRASH_AT: "after_db_commit:2"})
    assert hook is not None
    hook("after_db_commit", 1)  # another batch: nothing happens
    hook("after_offset_commit", 2)  # another point: nothing happens
