"""services.producer.stream: publish vs duplicate, the resume frontier, confirmed holes."""

from __future__ import annotations

from qryptify.binance.ws import ControlReply, KlineFrame, Malformed
from qryptify.pairs import MINUTE_MS, Pair
from services.producer.stream import LiveBook, Verdict, absent_open_times
from tests.conftest import T0, make_kline

BTC = Pair("BTCUSDT", "1m")
ETH = Pair("ETHUSDT", "1m")
M = MINUTE_MS


def book_at(frontier: int = T0) -> LiveBook:
    return LiveBook({BTC: frontier, ETH: frontier})


def test_first_close_publishes_second_is_a_counted_duplicate() -> None:
    book = book_at()
    candle = make_kline("BTCUSDT", "1m", T0 + M, source="ws")
    assert book.offer(candle) is Verdict.PUBLISH
    assert book.offer(candle) is Verdict.DUPLICATE
    # the same candle from REST (a gap fill racing the stream) is a duplicate too
    assert book.offer(make_kline("BTCUSDT", "1m", T0 + M, source="rest")) is Verdict.DUPLICATE
    # another pair at the same open time is not
    assert book.offer(make_kline("ETHUSDT", "1m", T0 + M)) is Verdict.PUBLISH
    assert book.stats.published == 2 and book.stats.duplicates == 2


def test_candles_at_or_before_the_frontier_are_duplicates() -> None:
    book = book_at()
    assert book.offer(make_kline("BTCUSDT", "1m", T0)) is Verdict.DUPLICATE
    assert book.offer(make_kline("BTCUSDT", "1m", T0 - M)) is Verdict.DUPLICATE


def test_unknown_pair_is_foreign() -> None:
    assert book_at().offer(make_kline("SOLUSDT", "1m", T0 + M)) is Verdict.FOREIGN


def test_frontier_moves_only_over_a_contiguous_acked_prefix() -> None:
    book = book_at()
    for i in (1, 2, 3):
        assert book.offer(make_kline("BTCUSDT", "1m", T0 + i * M)) is Verdict.PUBLISH
    assert not book.on_ack(BTC, T0 + 3 * M)  # out of order: frontier cannot pass 1 and 2
    assert book.frontier(BTC) == T0
    assert book.on_ack(BTC, T0 + M)
    assert book.frontier(BTC) == T0 + M
    assert book.on_ack(BTC, T0 + 2 * M)
    assert book.frontier(BTC) == T0 + 3 * M  # 2 closes the hole, 3 was already acked
    # still a duplicate after the frontier passed it
    assert book.offer(make_kline("BTCUSDT", "1m", T0 + 2 * M)) is Verdict.DUPLICATE


def test_failed_delivery_is_forgotten_so_it_is_fetched_again() -> None:
    book = book_at()
    book.offer(make_kline("BTCUSDT", "1m", T0 + M))
    assert book.missing_closed(BTC, T0 + 10 * M) == T0 + 2 * M
    book.on_failed(BTC, T0 + M)
    assert book.missing_closed(BTC, T0 + 10 * M) == T0 + M
    assert book.offer(make_kline("BTCUSDT", "1m", T0 + M)) is Verdict.PUBLISH


def test_missing_closed_uses_exchange_now() -> None:
    book = book_at()
    # the candle after the frontier (T0+1m) closes at T0+2m-1
    assert book.missing_closed(BTC, T0 + 2 * M - 1) is None
    assert book.missing_closed(BTC, T0 + 2 * M) == T0 + M


def test_dirty_and_committed() -> None:
    book = book_at()
    assert book.dirty() == []
    book.offer(make_kline("BTCUSDT", "1m", T0 + M))
    assert book.dirty() == []  # sent but not acked: nothing to commit
    book.on_ack(BTC, T0 + M)
    assert book.dirty() == [(BTC, T0 + M)]
    book.committed(book.dirty())
    assert book.dirty() == []


def test_confirmed_absent_candles_let_the_frontier_pass() -> None:
    book = book_at()
    book.offer(make_kline("BTCUSDT", "1m", T0 + 3 * M))
    book.on_ack(BTC, T0 + 3 * M)
    assert book.frontier(BTC) == T0
    assert book.confirm_absent(BTC, [T0 + M, T0 + 2 * M])
    assert book.frontier(BTC) == T0 + 3 * M
    assert book.stats.confirmed_absent == 2
    # a candle already sent is never marked absent
    book.offer(make_kline("BTCUSDT", "1m", T0 + 4 * M))
    book.confirm_absent(BTC, [T0 + 4 * M])
    assert book.stats.confirmed_absent == 2


def test_on_frame_classification() -> None:
    book = book_at()
    kline = make_kline("BTCUSDT", "1m", T0 + M, source="ws")
    closed = KlineFrame("btcusdt@kline_1m", T0 + 2 * M + 300, T0 + M, True, kline)
    assert book.on_frame(closed) is Verdict.PUBLISH
    assert book.on_frame(closed) is Verdict.DUPLICATE
    snapshot = KlineFrame("btcusdt@kline_1m", T0 + 2 * M + 500, T0 + 2 * M, False, None)
    assert book.on_frame(snapshot) is Verdict.OPEN
    assert book.on_frame(Malformed("not_json", "x")) is Verdict.MALFORMED
    assert book.on_frame(ControlReply(1, None)) is Verdict.CONTROL


def test_absent_open_times_needs_proof() -> None:
    start, end = T0, T0 + 6 * M
    # rows at 0, 1, 4 returned: 2 and 3 are holes before a newer row → confirmed
    found = [T0, T0 + M, T0 + 4 * M]
    assert absent_open_times(BTC, start, end, found, settled_before_ms=0) == [
        T0 + 2 * M,
        T0 + 3 * M,
    ]
    # 5 is after the newest row: REST may lag; confirmed only once settled
    assert absent_open_times(BTC, start, end, found, settled_before_ms=T0 + 7 * M) == [
        T0 + 2 * M,
        T0 + 3 * M,
        T0 + 5 * M,
    ]
    # nothing returned and nothing settled: nothing confirmed
    assert absent_open_times(BTC, start, end, [], settled_before_ms=T0) == []
