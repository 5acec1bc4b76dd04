"""Qryptify Ingestor: Binance USDⓈ-M Futures klines through Kafka into TimescaleDB."""

__version__ = "0.1.0"
