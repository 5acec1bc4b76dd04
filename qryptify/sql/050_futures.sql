-- Optional futures data (config section `futures`, off by default): funding rates, beside
-- candlesticks and never mixed into it. Written only by the futures sink path; with the
-- section off the table stays empty.
CREATE TABLE IF NOT EXISTS funding_rates (
    funding_time    TIMESTAMPTZ      NOT NULL,
    symbol          TEXT             NOT NULL,
    funding_rate    DOUBLE PRECISION NOT NULL,
    -- The mark price the exchange settled at: REST carries it, the archive CSV does not.
    mark_price      DOUBLE PRECISION,
    -- Hours of the period this funding settles: the archive carries it, REST does not.
    interval_hours  INTEGER,
    PRIMARY KEY (symbol, funding_time)
);
-- Per kind ('funding', later 'mark_price' …), symbol and interval ('' for funding): the time
-- of the newest record written. Only ever moves forward (GREATEST), like sync_state.
CREATE TABLE IF NOT EXISTS futures_sync_state (
    kind        TEXT        NOT NULL,
    symbol      TEXT        NOT NULL,
    interval    TEXT        NOT NULL,
    last_ts     TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, symbol, interval)
);
-- A hypertable when TimescaleDB is there (30-day chunks: funding is a few rows a day per
-- symbol); a plain table otherwise, with the same columns and key.
DO $migration$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        RAISE NOTICE 'timescaledb not loaded: funding_rates stays a plain table';
        RETURN;
    END IF;
    PERFORM create_hypertable('funding_rates', by_range('funding_time', INTERVAL '30 days'),
                              if_not_exists => TRUE, migrate_data => TRUE);
END
$migration$;
