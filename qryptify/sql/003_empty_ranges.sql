-- Open times in [start_ts, end_ts) that the exchange confirmed have no candles (maintenance).
-- The gap finder skips them; nothing is ever fabricated to fill them.
CREATE TABLE IF NOT EXISTS empty_ranges (
    symbol        TEXT        NOT NULL,
    interval      TEXT        NOT NULL,
    start_ts      TIMESTAMPTZ NOT NULL,
    end_ts        TIMESTAMPTZ NOT NULL,
    confirmed_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (symbol, interval, start_ts),
    CHECK (end_ts > start_ts)
);
