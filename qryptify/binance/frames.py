"""WebSocket kline frames in batches → what the producer acts on: per frame, in order, its
``Frame`` (``qryptify.binance.ws.parse_frame``'s verdict: an open candle's snapshot, a control
reply, or ``Malformed`` with the kind and reason the DLQ record carries), except that a valid
closed candle comes as a ``Close``: its key fields and its topic value, Avro-encoded, and that
an open candle's snapshot never carries its values (``KlineFrame.kline`` None: an open candle
is never published; with ``closed_only=False`` it is validated in full all the same).

The batch is what the socket had buffered when the producer read it, never waited for. It runs
in the compiled core when that is active (``native.MODULE.ws_kline_frames``): ASCII frames in
the exchange's exact layout (``ws._OPEN_SNAPSHOT_RE``, ``x`` true or false) with plain values
are decided there; every other frame goes to ``parse_frame`` through the ``decide`` callback, so
the verdicts on unusual frames are the Python path's by construction. ``kline_frames`` with
``native_ok=False`` is the pure-Python twin, the fallback and the oracle
(tests/unit/native/test_ws_frames.py holds the two byte-identical).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from qryptify import native
from qryptify.avro import KlineCodec, kline_encoder
from qryptify.binance.ws import Frame, KlineFrame, parse_frame


@dataclass(frozen=True, slots=True)
class Close:
    """A valid closed candle of one frame (``k.x`` true), ready to publish."""

    stream: str
    event_time: int  # "E", exchange ms
    symbol: str
    interval: str
    open_time: int
    value: bytes  # the topic value: the encoder's framing + the Kline record


def kline_frames(
    raws: Sequence[str | bytes],
    ingested_at: int,
    codec: KlineCodec,
    *,
    closed_only: bool = True,
    native_ok: bool = True,
) -> list[Frame | Close]:
    """Per frame of ``raws`` (as received), its verdict; see the module docstring. Never
    raises on bad input. ``closed_only=False`` (``ws.check_open_frames``) validates open
    candles in full too. A Kline schema the fast encoder does not write (the generic writer
    encodes it) runs on the Python path."""

    def decide(raw: str | bytes) -> Frame | Close:
        frame = parse_frame(raw, ingested_at, closed_only=closed_only)
        if type(frame) is KlineFrame and frame.kline is not None:
            k = frame.kline
            if not frame.closed:
                return KlineFrame(frame.stream, frame.event_time, frame.open_time, False, None)
            return Close(
                frame.stream, frame.event_time, k.symbol, k.interval, k.open_time, codec.encode(k)
            )
        return frame

    encoder = kline_encoder(codec)
    if native.MODULE is not None and native_ok and encoder is not None:
        # What every WS record of the batch ends with: source "ws" and the ingest time.
        _, tail = encoder.row_frame("", "", "ws", ingested_at)
        found: list[Frame | Close] = native.MODULE.ws_kline_frames(
            raws, encoder.prefix, tail, not closed_only, KlineFrame, Close, decide
        )
        return found
    return [decide(raw) for raw in raws]
