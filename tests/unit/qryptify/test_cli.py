"""The ``qryptify`` command line: argument placement and `config check` (no sockets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qryptify.cli import build_parser, main

ORIGINAL_CONFIG = Path(__file__).resolve().parents[2] / "fixtures" / "original-config.yaml"


@pytest.mark.parametrize(
    "argv",
    [
        ["--config", "x.yaml", "status"],
        ["status", "--config", "x.yaml"],
        ["tap", "--config", "x.yaml"],
        ["config", "check", "--config", "x.yaml"],
        ["--config", "x.yaml", "config", "check"],
    ],
)
def test_config_option_before_or_after_the_subcommand(argv: list[str]) -> None:
    assert build_parser().parse_args(argv).config == "x.yaml"


def test_config_after_the_subcommand_wins() -> None:
    args = build_parser().parse_args(["--config", "a.yaml", "status", "--config", "b.yaml"])
    assert args.config == "b.yaml"


def test_config_check_accepts_the_original_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", "--config", str(ORIGINAL_CONFIG)]) == 0
    out = capsys.readouterr().out
    assert "config OK" in out and "backfill from 2022-01-01T00:00:00Z" in out


def test_config_check_lists_every_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("pairs: [BTCUSDT/7m]\nsink: {batch_sise: 5}\n")
    monkeypatch.setenv("QRYPTIFY_METRICS__PORT", "70000")
    assert main(["config", "check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "3 error(s)" in err
    assert "config pairs[0]='BTCUSDT/7m'" in err and f"(from file {path})" in err
    assert "config sink.batch_sise: unknown key; allowed: group_id, batch_size" in err
    assert "config metrics.port=70000" in err
    assert "(from environment QRYPTIFY_METRICS__PORT)" in err


def test_status_without_pairs_is_a_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    # Built-in defaults have no pairs: an empty report must not read as HEALTHY.
    assert main(["status", "--now", "0"]) == 2
    assert "no pairs configured" in capsys.readouterr().err
