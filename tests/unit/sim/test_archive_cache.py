"""``python -m sim --archive-cache-mb``: how many bytes of built zips the simulator keeps (the
bench builds every zip of its archive figure before timing, ~150 MB, more than the default)."""

from __future__ import annotations

from functools import partial

import pytest

from sim.__main__ import _parser
from sim.archive import ArchiveFile, BuiltArchive, build_zip
from sim.bars import Availability
from sim.state import ARCHIVE_CACHE_BYTES, SimConfig, SimState


def _built(name: str) -> BuiltArchive:
    day = 1_704_067_200_000  # 2024-01-01
    file = ArchiveFile("daily", "BTCUSDT", "1m", day, day + 86_400_000, name, False)
    return build_zip(file, b"x" * 50_000)


def test_the_option_sets_the_bound_in_mib() -> None:
    assert _parser().parse_args(["--archive-cache-mb", "256"]).archive_cache_mb == 256
    assert _parser().parse_args([]).archive_cache_mb << 20 == ARCHIVE_CACHE_BYTES


def test_the_state_keeps_zips_up_to_the_bound() -> None:
    avail = Availability(0, None)
    roomy = SimState(SimConfig(archive_cache_bytes=1 << 20))
    tight = SimState(SimConfig(archive_cache_bytes=0))
    for state in (roomy, tight):
        for name in ("a.zip", "b.zip"):
            state.archives.get_or_make((name, avail), partial(_built, name))
    assert len(roomy.archives) == 2
    assert len(tight.archives) == 1  # over the bound: only the newest stays


def test_a_negative_bound_is_refused() -> None:
    with pytest.raises(ValueError, match="archive cache"):
        SimConfig(archive_cache_bytes=-1)
