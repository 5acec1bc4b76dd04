"""Optional futures data beside the trade klines (config section ``futures``, off by default).

Funding rates and mark / index / premium-index klines travel on their own topic
(``futures.topic``, default ``klines.futures``): ``FundingRate`` records keyed
``SYMBOL|funding`` into ``funding_rates``, ``PriceKline`` and ``PriceEmptyRange`` (the ranges
the exchange confirmed have no candle) keyed ``SYMBOL|kind|interval`` into the kind's kline and
empty-range tables. The ``klines`` topic and ``candlesticks`` are untouched whether the section
is on or off. Why a sibling topic: docs/consumers.md; the rest: docs/futures.md.
"""
