"""Binance USDⓈ-M Futures edges: the REST client, the weight budget, the bulk archive, and
(owned by the producer) the WebSocket stream. See README.md in this folder for the API."""
