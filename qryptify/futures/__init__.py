"""Optional futures data beside the trade klines (config section ``futures``, off by default).

Funding rates travel on their own topic (``futures.topic``, default ``klines.futures``) as
``FundingRate`` Avro records keyed ``SYMBOL|funding`` and land in ``funding_rates``; the
``klines`` topic and ``candlesticks`` are untouched whether the section is on or off. Why a
sibling topic: docs/consumers.md.
"""
