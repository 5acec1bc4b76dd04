"""CPU per REST klines page, compiled core vs Python path (a measurement, not a test).

``python -m bench.native_pages [--pages N]`` times ``page_values`` (raw JSON page → closed
candles' topic values) on a page of ``best_page_limit()`` realistic rows, on both paths, with
the process CPU clock, and prints µs per page and per candle."""

from __future__ import annotations

import argparse
import json
import time

from qryptify import native
from qryptify.avro import KlineCodec, kline_encoder
from qryptify.binance.rest import page_values
from qryptify.binance.weights import best_page_limit
from qryptify.pairs import Pair

T0 = 1_704_067_200_000


def page(rows: int) -> bytes:
    """A Binance-shaped page (compact JSON, 12 columns, prices with 1-2 decimals)."""
    return json.dumps(
        [
            [
                T0 + 60_000 * i,
                f"{42000 + i % 97}.{i % 10}",
                f"{42010 + i % 89}.5",
                f"{41990 + i % 83}.25",
                f"{42001 + i % 79}.1",
                f"{123 + i % 71}.456",
                T0 + 60_000 * i + 59_999,
                f"{5_170_000 + i}.12345",
                1000 + i,
                f"{61 + i % 7}.228",
                f"{2_580_000 + i}.5",
                "0",
            ]  # fmt: skip
            for i in range(rows)
        ],
        separators=(",", ":"),
    ).encode()


def cpu_per_page(body: bytes, pages: int, native_ok: bool) -> float:
    codec = KlineCodec()
    assert kline_encoder(codec) is not None  # noqa: S101 - the current schema always has one
    pair, now = Pair("BTCUSDT", "1m"), T0 + 10**12
    start = time.process_time()
    for _ in range(pages):
        page_values(pair, body, now, now, codec, native_ok=native_ok)
    return (time.process_time() - start) / pages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pages", type=int, default=2000)
    args = parser.parse_args()
    rows = best_page_limit()
    body = page(rows)
    print(f"{native.describe()}; page of {rows} candles, {len(body)} bytes, {args.pages} pages")
    python = cpu_per_page(body, args.pages, native_ok=False)
    print(f"python path: {python * 1e6:.0f} µs CPU/page, {python * 1e6 / rows:.2f} µs/candle")
    if native.MODULE is not None:
        ours = cpu_per_page(body, args.pages, native_ok=True)
        print(f"native core: {ours * 1e6:.0f} µs CPU/page, {ours * 1e6 / rows:.2f} µs/candle "
              f"({python / ours:.1f}x less CPU)")  # fmt: skip


if __name__ == "__main__":
    main()
