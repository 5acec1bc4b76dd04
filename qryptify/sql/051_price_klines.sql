-- Optional futures data (config `futures`: mark_price, index_price, premium_index): one table
-- per kind beside candlesticks, with the candle's prices (the exchange's volumes are always 0
-- for these kinds and are not kept) and the count of price samples.
CREATE TABLE IF NOT EXISTS mark_price_klines (
    ts          TIMESTAMPTZ      NOT NULL,
    symbol      TEXT             NOT NULL,
    interval    TEXT             NOT NULL,
    open        DOUBLE PRECISION NOT NULL,
    high        DOUBLE PRECISION NOT NULL,
    low         DOUBLE PRECISION NOT NULL,
    close       DOUBLE PRECISION NOT NULL,
    close_time  TIMESTAMPTZ      NOT NULL,
    samples     BIGINT           NOT NULL,
    PRIMARY KEY (symbol, interval, ts)
);
CREATE TABLE IF NOT EXISTS index_price_klines (LIKE mark_price_klines INCLUDING ALL);
CREATE TABLE IF NOT EXISTS premium_index_klines (LIKE mark_price_klines INCLUDING ALL);
-- Hypertables with 1-day chunks when TimescaleDB is loaded (as candlesticks); plain otherwise.
DO $migration$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        RAISE NOTICE 'timescaledb not loaded: the price kline tables stay plain tables';
        RETURN;
    END IF;
    PERFORM create_hypertable('mark_price_klines', by_range('ts', INTERVAL '1 day'),
                              if_not_exists => TRUE, migrate_data => TRUE);
    PERFORM create_hypertable('index_price_klines', by_range('ts', INTERVAL '1 day'),
                              if_not_exists => TRUE, migrate_data => TRUE);
    PERFORM create_hypertable('premium_index_klines', by_range('ts', INTERVAL '1 day'),
                              if_not_exists => TRUE, migrate_data => TRUE);
END
$migration$;
