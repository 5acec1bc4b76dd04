"""Fault flags: parsing, validation, stable selections."""

from __future__ import annotations

import json

import pytest

from sim.faults import MALFORMED_KINDS, CandleRef, EmptyRange, FaultError, Faults, load_faults


def test_defaults_are_a_healthy_exchange() -> None:
    f = Faults()
    assert f.rest_429_next == 0 and f.rest_5xx_rate == 0 and not f.ws_stall
    assert not f.is_corrected("BTCUSDT", "1m", 0)
    assert not f.is_archive_missing("BTCUSDT-1m-2024-01.zip")
    assert not f.is_archive_corrupt("BTCUSDT-1m-2024-01.zip")


def test_patch_round_trips_through_json() -> None:
    f = Faults().updated(
        {
            "rest_429_next": 3,
            "ws_stall": True,
            "ws_malformed_kinds": ["bad_ohlc"],
            "empty_ranges": [{"symbol": "BTCUSDT", "start": 0, "end": 60_000}],
            "corrected": [{"symbol": "ETHUSDT", "interval": "1h", "open_time": 3_600_000}],
            "archive_missing": ["BTCUSDT-1m-2024-01.zip"],
            "slow_ms": 50,
            "ws_drop_every_s": 1.5,
        }
    )
    assert f.rest_429_next == 3 and f.ws_stall and f.ws_malformed_kinds == ("bad_ohlc",)
    assert f.empty_ranges == (EmptyRange(0, 60_000, "BTCUSDT"),)
    assert f.corrected == (CandleRef("ETHUSDT", "1h", 3_600_000),)
    again = Faults().updated(json.loads(json.dumps(f.to_json())))
    assert again == f


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"nope": 1}, "unknown fault flag"),
        ({"ws_stall": 1}, "true or false"),
        ({"rest_429_next": -1}, "integer >= 0"),
        ({"rest_429_next": 1.5}, "integer >= 0"),
        ({"rest_5xx_rate": 2}, "within 0..1"),
        ({"ws_malformed_kinds": ["nope"]}, "subset"),
        ({"empty_ranges": [{"start": 5, "end": 5}]}, "after start"),
        ({"empty_ranges": {"start": 5}}, "expected a list"),
        ({"corrected": [{"symbol": "BTCUSDT", "interval": "2m", "open_time": 0}]}, "interval"),
    ],
)
def test_bad_patches_are_refused_with_the_key(patch: dict[str, object], message: str) -> None:
    with pytest.raises(FaultError, match=message):
        Faults().updated(patch)


def test_rates_choose_stable_subsets() -> None:
    f = Faults(corrected_rate=0.5, archive_missing_rate=0.5, archive_corrupt_rate=0.5)
    picks = [f.is_corrected("BTCUSDT", "1m", t * 60_000) for t in range(400)]
    assert picks == [f.is_corrected("BTCUSDT", "1m", t * 60_000) for t in range(400)]
    assert 120 < sum(picks) < 280
    names = [f"BTCUSDT-1m-2024-{m:02d}-{d:02d}.zip" for m in range(1, 13) for d in range(1, 29)]
    missing = [f.is_archive_missing(n) for n in names]
    assert 100 < sum(missing) < 236
    # A missing zip's CHECKSUM is missing too.
    assert all(
        f.is_archive_missing(n + ".CHECKSUM") == m for n, m in zip(names, missing, strict=True)
    )
    assert Faults(corrected_rate=1.0).is_corrected("X", "1m", 0)


def test_empty_ranges_apply_to_their_symbol_or_to_all() -> None:
    f = Faults().updated(
        {
            "empty_ranges": [
                {"symbol": None, "start": 0, "end": 10},
                {"symbol": "A", "start": 20, "end": 30},
            ]
        }
    )
    assert f.empty_ranges_for("A") == [(0, 10), (20, 30)]
    assert f.empty_ranges_for("B") == [(0, 10)]


def test_load_faults_from_text_and_file(tmp_path: object) -> None:
    assert load_faults(None) == Faults()
    assert load_faults('{"slow_ms": 5}').slow_ms == 5
    from pathlib import Path

    path = Path(str(tmp_path)) / "f.json"
    path.write_text('{"ws_stall": true}')
    assert load_faults(str(path)).ws_stall
    with pytest.raises(FaultError, match="JSON"):
        load_faults("{nope")
    assert set(MALFORMED_KINDS) == {"bad_json", "missing_field", "wrong_type", "bad_ohlc"}


def test_reuploads_validate_and_correct_empty_ranges_in_time_order() -> None:
    from sim.faults import Reupload, corrected_empty_ranges

    f = Faults().updated(
        {"archive_reuploads": [
            {"file": "BTCUSDT-1h-2024-01.zip", "at": 200, "filled": [[10, 20]]},
            {"file": "BTCUSDT-1h-2024-01.zip", "at": 100, "empty": [[0, 30]]},
            {"file": "ETHUSDT-1m-2024-01-05.zip", "at": 50, "empty": [[5, 6]]},
        ]}
    )  # fmt: skip
    assert f.reuploads_done("BTCUSDT", 99) == ()
    done = f.reuploads_done("BTCUSDT", 200)
    assert [r.at for r in done] == [100, 200]
    assert corrected_empty_ranges([(40, 50)], done) == [(40, 50), (0, 10), (20, 30)]
    assert corrected_empty_ranges([], done[:1]) == [(0, 30)]
    assert Faults().updated(json.loads(json.dumps(f.to_json()))) == f
    assert done[0] == Reupload("BTCUSDT-1h-2024-01.zip", 100, ((0, 30),))
    for bad, message in (
        ({"file": "x.zip", "at": 1, "empty": [[0, 1]]}, "zip name"),
        ({"file": "BTCUSDT-1h-2024-01.zip", "at": 1}, "changes something"),
        ({"file": "BTCUSDT-1h-2024-01.zip", "at": 1, "empty": [[2, 1]]}, "end > start"),
        ({"file": "BTCUSDT-1h-2024-01.zip", "at": "soon", "empty": [[0, 1]]}, "'at'"),
    ):
        with pytest.raises(FaultError, match=message):
            Faults().updated({"archive_reuploads": [bad]})
