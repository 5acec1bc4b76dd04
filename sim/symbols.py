"""The simulator's symbol list: a built-in default and a YAML loader.

YAML shape (``--symbols PATH``)::

    symbols:
      - symbol: BTCUSDT
        onboard: 2019-09-25T08:00:00Z      # ISO date/time or epoch ms
        price_precision: 2
        quantity_precision: 3
        base_price: 40000                  # level the price wanders around
        volume_per_minute: 150             # mean base-asset volume per minute
        trades_per_minute: 1500
        status: TRADING                    # optional
        delist: 2024-06-01                 # optional: no candles from then on
        maintenance: [[2020-11-30T06:00:00Z, 2020-11-30T07:00:00Z]]   # optional
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from sim.bars import SymbolSpec
from sim.grid import check_symbol

_QUOTES = ("USDT", "USDC", "BUSD")


def parse_time_ms(value: object, what: str = "time") -> int:
    """Epoch ms from an int, a digit string, or an ISO date / date-time (UTC if naive)."""
    if isinstance(value, bool):
        raise ValueError(f"{what}: expected epoch ms or an ISO date, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, dt.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return int(moment.timestamp() * 1000)
    if isinstance(value, dt.date):
        return int(
            dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC).timestamp() * 1000
        )
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        try:
            moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{what}: expected epoch ms or an ISO date, got {value!r}") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        return int(moment.timestamp() * 1000)
    raise ValueError(f"{what}: expected epoch ms or an ISO date, got {value!r}")


def _split_assets(symbol: str) -> tuple[str, str]:
    for quote in _QUOTES:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    return symbol, "USDT"


def spec_from_mapping(item: Mapping[str, Any]) -> SymbolSpec:
    symbol = check_symbol(item.get("symbol"))
    base, quote = _split_assets(symbol)
    allowed = {
        "symbol",
        "onboard",
        "price_precision",
        "quantity_precision",
        "base_price",
        "volume_per_minute",
        "trades_per_minute",
        "status",
        "delist",
        "maintenance",
        "seed",
        "base_asset",
        "quote_asset",
    }
    extra = set(item) - allowed
    if extra:
        raise ValueError(f"{symbol}: unknown keys {sorted(extra)}; allowed: {sorted(allowed)}")
    delist = item.get("delist")
    maintenance = tuple(
        (parse_time_ms(a, f"{symbol} maintenance"), parse_time_ms(b, f"{symbol} maintenance"))
        for a, b in item.get("maintenance") or ()
    )
    return SymbolSpec(
        symbol=symbol,
        base_asset=str(item.get("base_asset", base)),
        quote_asset=str(item.get("quote_asset", quote)),
        onboard_ms=parse_time_ms(item.get("onboard", "2020-01-01"), f"{symbol} onboard"),
        price_precision=int(item.get("price_precision", 2)),
        quantity_precision=int(item.get("quantity_precision", 3)),
        base_price=float(item.get("base_price", 100.0)),
        volume_per_minute=float(item.get("volume_per_minute", 1000.0)),
        trades_per_minute=int(item.get("trades_per_minute", 200)),
        status=str(item.get("status", "TRADING" if delist is None else "SETTLING")),
        delist_ms=None if delist is None else parse_time_ms(delist, f"{symbol} delist"),
        maintenance=maintenance,
        seed=int(item.get("seed", 0)),
    )


def load_symbols(path: str | Path) -> tuple[SymbolSpec, ...]:
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    items = raw.get("symbols") if isinstance(raw, Mapping) else raw
    if not isinstance(items, list) or not items:
        raise ValueError(f"{path}: expected a non-empty list under 'symbols'")
    return tuple(spec_from_mapping(item) for item in items)


def _spec(
    symbol: str,
    onboard: str,
    pp: int,
    qp: int,
    price: float,
    volume: float,
    trades: int,
    **extra: Any,
) -> SymbolSpec:
    base, quote = _split_assets(symbol)
    return SymbolSpec(
        symbol=symbol,
        base_asset=base,
        quote_asset=quote,
        onboard_ms=parse_time_ms(onboard),
        price_precision=pp,
        quantity_precision=qp,
        base_price=price,
        volume_per_minute=volume,
        trades_per_minute=trades,
        **extra,
    )


#: Onboard dates follow the real listings; DELISTUSDT is settled (no candles from 2024-06-01);
#: QUIETUSDT trades ~2 times a minute, so about one minute in nine has no trade at all.
DEFAULT_SYMBOLS: tuple[SymbolSpec, ...] = (
    _spec("BTCUSDT", "2019-09-25T08:00:00Z", 2, 3, 40000.0, 150.0, 1500),
    _spec("ETHUSDT", "2019-11-27T07:00:00Z", 2, 3, 2500.0, 2000.0, 1000),
    _spec("BNBUSDT", "2020-02-10T08:00:00Z", 3, 2, 400.0, 800.0, 300),
    _spec("XRPUSDT", "2020-01-06T08:00:00Z", 4, 1, 0.6, 500000.0, 400),
    _spec("LTCUSDT", "2020-01-09T08:00:00Z", 2, 3, 90.0, 3000.0, 200),
    _spec("LINKUSDT", "2020-01-17T08:00:00Z", 3, 2, 15.0, 20000.0, 200),
    _spec("ADAUSDT", "2020-01-31T08:00:00Z", 5, 0, 0.5, 600000.0, 300),
    _spec("DOGEUSDT", "2020-07-10T08:00:00Z", 6, 0, 0.12, 3000000.0, 500),
    _spec("SOLUSDT", "2020-09-14T08:00:00Z", 4, 0, 100.0, 15000.0, 600),
    _spec("1000PEPEUSDT", "2023-05-05T08:00:00Z", 7, 0, 0.01, 50000000.0, 400),
    _spec("QUIETUSDT", "2023-01-02T08:00:00Z", 4, 1, 2.0, 30.0, 2),
    _spec(
        "DELISTUSDT",
        "2021-01-04T08:00:00Z",
        4,
        0,
        1.5,
        20000.0,
        20,
        status="SETTLING",
        delist_ms=parse_time_ms("2024-06-01T00:00:00Z"),
    ),
)


def generated_symbols(count: int, onboard: str = "2021-01-01T00:00:00Z") -> tuple[SymbolSpec, ...]:
    """``count`` synthetic symbols (SIM000USDT, …) for load tests that need many streams."""
    return tuple(
        _spec(f"SIM{i:03d}USDT", onboard, 4, 1, 1.0 + i, 10000.0, 50) for i in range(count)
    )


def symbols_to_yaml(specs: Sequence[SymbolSpec]) -> str:
    items = []
    for s in specs:
        item: dict[str, Any] = {
            "symbol": s.symbol,
            "onboard": s.onboard_ms,
            "price_precision": s.price_precision,
            "quantity_precision": s.quantity_precision,
            "base_price": s.base_price,
            "volume_per_minute": s.volume_per_minute,
            "trades_per_minute": s.trades_per_minute,
            "status": s.status,
        }
        if s.delist_ms is not None:
            item["delist"] = s.delist_ms
        if s.maintenance:
            item["maintenance"] = [list(m) for m in s.maintenance]
        items.append(item)
    return yaml.safe_dump({"symbols": items}, sort_keys=False)
