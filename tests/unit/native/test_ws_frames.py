"""The compiled WebSocket frames → verdicts step against its Python twin (``parse_frame`` +
``KlineCodec.encode`` per frame): on exchange-shaped, damaged and arbitrary frames (text and
binary), the same verdict per frame — open snapshot, valid close with a byte-identical topic
value, control reply, or ``Malformed`` with the same kind, reason and stream for the DLQ — and
the comparison fails when either side is altered."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qryptify import native
from qryptify.avro import KlineCodec, kline_encoder
from qryptify.binance import frames as frames_module
from qryptify.binance import ws
from qryptify.binance.frames import Close, kline_frames
from qryptify.binance.ws import KlineFrame

CODEC = KlineCodec()
T0 = 1_704_067_200_000  # 2024-01-01, a Monday
INGESTED = T0 + 10 * 60_000
STEP = {"1m": 60_000, "1h": 3_600_000, "1w": 7 * 86_400_000, "1M": 2_678_400_000}

_plain_dec = st.from_regex(r"-?[0-9]{1,12}(\.[0-9]{1,8})?", fullmatch=True)
_dec = _plain_dec | st.sampled_from(
    ["1", "0.1", "-0", "-0.0", "1e5", "2.5E-3", "007", "1.", ".5", "", "NaN", "1_0", " 1", "é"]
)


def _kline(draw: st.DrawFn, *, plain: bool) -> dict[str, Any]:
    interval = draw(st.sampled_from(list(STEP)) if plain else st.sampled_from([*STEP, "2m", "1H"]))
    symbol = draw(
        st.sampled_from(["BTCUSDT", "ETHUSDT", "BTCUSDT_240329", "A1"])
        if plain
        else st.sampled_from(["BTCUSDT", "btcusdt", "B", "BTC-USDT", "BTCUSDT_1", "É", ""])
    )
    t = T0 + STEP[interval] * draw(st.integers(0, 3)) if interval in STEP else T0
    if plain:
        lo, hi = sorted(draw(st.tuples(_plain_dec, _plain_dec)), key=float)
        o = draw(st.sampled_from([lo, hi]))
        c = draw(st.sampled_from([hi, lo]))
        vols = [draw(st.from_regex(r"[0-9]{1,9}(\.[0-9]{1,8})?", fullmatch=True)) for _ in "vqVQ"]
    else:
        lo, hi, o, c = (draw(_dec) for _ in range(4))
        vols = [draw(_dec) for _ in "vqVQ"]
    close_time = (
        (t + 2_678_400_000 - 1 if interval == "1M" else t + STEP.get(interval, 60_000) - 1)
        if plain or draw(st.booleans())
        else draw(st.sampled_from([t, t + 1, -1, 10**20]))
    )
    return {
        "t": t if plain or draw(st.booleans()) else draw(st.sampled_from([-5, 0, 10**19, 1.5])),
        "T": close_time,
        "s": symbol,
        "i": interval,
        "f": draw(st.integers(-1, 10**6)),
        "L": draw(st.integers(-1, 10**6)),
        "o": o,
        "c": c,
        "h": hi,
        "l": lo,
        "v": vols[0],
        "n": draw(st.integers(0, 10**6)) if plain else draw(st.sampled_from([0, -1, 10**19, "3"])),
        "x": draw(st.booleans()),
        "q": vols[1],
        "V": vols[2],
        "Q": vols[3],
        "B": "0",
    }


@st.composite
def frames(draw: st.DrawFn) -> str | bytes:
    """Frames in the exchange's exact layout (half of them plain), or with damage mixed in."""
    plain = draw(st.booleans())
    k = _kline(draw, plain=plain)
    symbol = k["s"] if isinstance(k["s"], str) else "X"
    stream = f"{symbol.lower()}@kline_{k['i']}"
    if not plain and draw(st.booleans()):
        stream = draw(st.sampled_from(["ethusdt@kline_1m", "", "btcusdt@depth", stream.upper()]))
    data = {"e": "kline", "E": T0 + draw(st.integers(0, 10**6)), "s": symbol, "k": k}
    doc: dict[str, Any] = {"stream": stream, "data": data}
    if not plain:
        how = draw(st.sampled_from(["none", "event", "drop", "swap", "extra", "raw"]))
        if how == "event":
            data["e"] = draw(st.sampled_from(["trade", None, 1]))
        elif how == "drop":
            del k[draw(st.sampled_from(sorted(k)))]
        elif how == "swap":
            k["o"], k["c"] = k["c"], k["o"]
            data["E"] = draw(st.sampled_from([True, -1, "1", 10**20]))
        elif how == "extra":
            k["z"] = 1
        elif how == "raw":
            doc = data  # a raw (not combined) stream's frame
    separators = (",", ":") if plain else draw(st.sampled_from([(",", ":"), (", ", ": ")]))
    text = json.dumps(doc, separators=separators, ensure_ascii=draw(st.booleans()))
    return text.encode() if draw(st.booleans()) else text


@st.composite
def damaged_frames(draw: st.DrawFn) -> str | bytes:
    raw = draw(frames())
    body = bytearray(raw.encode() if isinstance(raw, str) else raw)
    at = draw(st.integers(0, len(body) - 1))
    how = draw(st.sampled_from(["cut", "flip", "insert"]))
    if how == "cut":
        body = body[:at]
    elif how == "flip":
        body[at] ^= 1 << draw(st.integers(0, 7))
    else:
        body[at:at] = draw(st.binary(min_size=1, max_size=3))
    return bytes(body)


def _verdicts(raws: list[str | bytes], native_ok: bool, closed_only: bool = True) -> list[Any]:
    return kline_frames(raws, INGESTED, CODEC, closed_only=closed_only, native_ok=native_ok)


@given(st.lists(frames(), max_size=8), st.booleans())
def test_native_frames_equal_the_python_twin(raws: list[str | bytes], closed_only: bool) -> None:
    assert _verdicts(raws, True, closed_only) == _verdicts(raws, False, closed_only)


@given(st.lists(damaged_frames(), max_size=6), st.booleans())
def test_native_frames_on_damaged_frames(raws: list[str | bytes], closed_only: bool) -> None:
    assert _verdicts(raws, True, closed_only) == _verdicts(raws, False, closed_only)


@given(st.lists(st.binary(max_size=200) | st.text(max_size=200), max_size=6), st.booleans())
def test_native_frames_on_arbitrary_frames(raws: list[str | bytes], closed_only: bool) -> None:
    assert _verdicts(raws, True, closed_only) == _verdicts(raws, False, closed_only)


def _frame(closed: bool, **changes: Any) -> str:
    k = {"t": T0, "T": T0 + 59_999, "s": "BTCUSDT", "i": "1m", "f": 1, "L": 9, "o": "1.5",
         "c": "1.25", "h": "2", "l": "1", "v": "10", "n": 3, "x": closed, "q": "15", "V": "5",
         "Q": "7.5", "B": "0"}  # fmt: skip
    k.update(changes)
    data = {"e": "kline", "E": T0 + 60_000, "s": "BTCUSDT", "k": k}
    return json.dumps({"stream": "btcusdt@kline_1m", "data": data}, separators=(",", ":"))


def test_exchange_shaped_frames_are_decided_natively_and_the_rest_by_the_python_path() -> None:
    assert native.MODULE is not None
    encoder = kline_encoder(CODEC)
    assert encoder is not None
    _, tail = encoder.row_frame("", "", "ws", INGESTED)
    asked: list[Any] = []

    def decide(raw: Any) -> str:
        asked.append(raw)
        return "python"

    bad = _frame(True, h="1.4")  # high below open: invalid, the Python path names it
    bad_open = _frame(False, h="1.4")
    raws = [_frame(False), _frame(True), "not json", bad, bad_open]
    found = native.MODULE.ws_kline_frames(
        raws, encoder.prefix, tail, True, KlineFrame, Close, decide
    )
    assert asked == ["not json", bad, bad_open]
    assert found[0] == KlineFrame("btcusdt@kline_1m", T0 + 60_000, T0, False, None)
    assert isinstance(found[1], Close) and found[1].open_time == T0
    # The value decodes to the candle the frame carried (the codec is the reference).
    decoded = CODEC.decode(found[1].value)
    assert (decoded.open, decoded.close, decoded.source) == ("1.5", "1.25", "ws")  # type: ignore[union-attr]
    verdict = _verdicts([bad], True)[0]
    assert isinstance(verdict, ws.Malformed) and verdict.kind == ws.INVALID_KLINE
    # Open snapshots are checked in full only when asked (ws.check_open_frames).
    assert _verdicts([bad_open], True, closed_only=True)[0] == found[0]
    verdict = _verdicts([bad_open], True, closed_only=False)[0]
    assert isinstance(verdict, ws.Malformed) and verdict.kind == ws.INVALID_KLINE


def test_the_comparison_fails_when_the_native_output_is_altered(monkeypatch: Any) -> None:
    raws: list[str | bytes] = [_frame(False), _frame(True)]
    assert _verdicts(raws, True) == _verdicts(raws, False)
    real = native.MODULE

    class Altered:
        def ws_kline_frames(self, *args: Any) -> Any:
            found = real.ws_kline_frames(*args)  # type: ignore[union-attr]
            c = found[1]
            found[1] = Close(c.stream, c.event_time, c.symbol, c.interval, c.open_time,
                             c.value[:-1] + b"\x02")  # fmt: skip
            return found

    monkeypatch.setattr(native, "MODULE", Altered())
    with pytest.raises(AssertionError):
        assert _verdicts(raws, True) == _verdicts(raws, False)


def test_the_comparison_fails_when_the_python_path_is_altered(monkeypatch: Any) -> None:
    raws: list[str | bytes] = [_frame(True)]
    real = ws.parse_frame
    monkeypatch.setattr(
        frames_module,
        "parse_frame",
        lambda raw, at, closed_only: real(raw, at + 1, closed_only=closed_only),
    )
    with pytest.raises(AssertionError):
        assert _verdicts(raws, True) == _verdicts(raws, False)
