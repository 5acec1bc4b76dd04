"""The compiled archive CSV → Avro step against its Python twin (``_fast_rows`` +
``KlineEncoder.encode_rows``): the same files taken, byte-identical values, the same errors
for the files either gives back to the general parser; and the comparison can fail."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qryptify import native
from qryptify.avro import KlineCodec, kline_encoder
from qryptify.binance.archive import _fast_rows, parse_csv_encoded
from qryptify.errors import ArchiveError

CODEC = KlineCodec()
ENCODER = kline_encoder(CODEC)
HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
    "taker_buy_volume,taker_buy_quote_volume,ignore"
)
T0 = 1_704_067_200_000

_dec = st.sampled_from(
    ["1", "0.1", "42000.50", "-3", "1e5", "2.5E-3", "007", "1.", ".5", "", " 1", "1e"]
)
_dec = _dec | st.from_regex(r"-?[0-9]{1,12}(\.[0-9]{1,8})?([eE][-+]?[0-9]{1,3})?", fullmatch=True)


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    lines: list[str] = []
    if draw(st.booleans()):
        lines.append(HEADER)
    for i in range(draw(st.integers(0, 12))):
        t = T0 + 60_000 * draw(st.sampled_from([i, i, i, i - 1]))
        cells = [str(t), *(draw(_dec) for _ in range(5)), str(t + 59_999), draw(_dec),
                 str(draw(st.integers(0, 10**6))), draw(_dec), draw(_dec)]  # fmt: skip
        if draw(st.booleans()):
            cells.append(draw(st.sampled_from(["0", "", "x y", "\t", "a\x0bb", "é"])))
        damage = draw(st.sampled_from(["none"] * 6 + ["us", "big", "space", "drop", "blank"]))
        if damage == "us":
            cells[0] = str(t * 1000)
        elif damage == "big":
            cells[8] = "9" * 19
        elif damage == "space":
            cells[draw(st.integers(0, 10))] += " "
        elif damage == "drop":
            del cells[draw(st.integers(0, 10))]
        elif damage == "blank":
            lines.append("")
        lines.append(",".join(cells))
    end = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = end.join(lines) + draw(st.sampled_from(["", end, "\n\n"]))
    return text.encode()


def _python(data: bytes) -> Any:
    rows = _fast_rows(data)
    assert ENCODER is not None
    return None if rows is None else ENCODER.encode_rows("BTCUSDT", "1m", "archive", T0, rows)


def _native(data: bytes) -> Any:
    assert native.MODULE is not None and ENCODER is not None
    head, tail = ENCODER.row_frame("BTCUSDT", "1m", "archive", T0)
    return native.MODULE.archive_csv_values(data, b"open_time", head, tail)


def _parsed(data: bytes, native_ok: bool) -> Any:
    try:
        rows = parse_csv_encoded(data, "BTCUSDT", "1m", T0, CODEC, "f.csv", native_ok=native_ok)
    except ArchiveError as exc:
        return ("error", str(exc))
    return rows.open_times, rows.close_times, rows.values


@given(csv_files())
def test_native_csv_step_equals_the_python_twin(data: bytes) -> None:
    ours, oracle = _native(data), _python(data)
    assert (ours is None) == (oracle is None)
    if ours is not None:
        assert tuple(ours) == tuple(oracle)
    assert _parsed(data, True) == _parsed(data, False)


@given(st.binary(max_size=300))
def test_native_csv_step_on_arbitrary_bytes(data: bytes) -> None:
    ours, oracle = _native(data), _python(data)
    assert (ours is None) == (oracle is None)
    if ours is not None:
        assert tuple(ours) == tuple(oracle)


def test_a_plain_file_takes_the_native_path_and_fails_the_comparison_when_altered(
    monkeypatch: Any,
) -> None:
    data = f"{HEADER}\n{T0},1.5,2,1,1.5,10,{T0 + 59_999},15,3,5,7.5,0\n".encode()
    assert _native(data) is not None
    assert _parsed(data, True) == _parsed(data, False)
    real = native.MODULE

    class Altered:
        def archive_csv_values(self, *args: Any) -> Any:
            opens, closes, values = real.archive_csv_values(*args)  # type: ignore[union-attr]
            return opens, closes, [v[:-1] + b"\x02" for v in values]

    monkeypatch.setattr(native, "MODULE", Altered())
    with pytest.raises(AssertionError):
        assert _parsed(data, True) == _parsed(data, False)
