"""``settle_garbage_collector``: what a service does once started, before its run loop."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from qryptify.service import GC_YOUNG_THRESHOLD, settle_garbage_collector


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_gc")
def test_start_up_objects_leave_the_collectors_reach_and_young_collections_are_rarer() -> None:
    gc.unfreeze()
    survivor = [object() for _ in range(10)]  # alive after start-up, like config and clients
    settle_garbage_collector()
    assert gc.get_freeze_count() >= len(survivor)
    # Frozen: in no generation a collection walks.
    assert gc.is_tracked(survivor) and not any(o is survivor for o in gc.get_objects())
    older = gc.get_threshold()[1:]
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *older)
    assert GC_YOUNG_THRESHOLD > 700  # Python's default, which the bulk paths outgrow
