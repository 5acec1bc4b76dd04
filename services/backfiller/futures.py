"""The futures passes the backfiller runs after each kline pass (``futures`` config)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from qryptify.binance.rest import SymbolInfo
from services.backfiller.funding import FundingBackfill
from services.backfiller.price_klines import PriceKlineBackfill


@dataclass(slots=True)
class FuturesPasses:
    funding: FundingBackfill | None = None
    prices: PriceKlineBackfill | None = None

    async def run_pass(self, infos: Mapping[str, SymbolInfo]) -> None:
        if self.funding is not None:
            await self.funding.run_pass(infos)
        if self.prices is not None:
            await self.prices.run_pass(infos)
