-- Per pair, the open time of the newest closed candle written. Only ever moves forward
-- (the sink upserts it with GREATEST in the same transaction as the candles).
CREATE TABLE IF NOT EXISTS sync_state (
    symbol          TEXT        NOT NULL,
    interval        TEXT        NOT NULL,
    last_closed_ts  TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, interval)
);
