-- The seed's table, unchanged: trading code reads these columns.
CREATE TABLE IF NOT EXISTS candlesticks (
    ts                  TIMESTAMPTZ      NOT NULL,
    symbol              TEXT             NOT NULL,
    interval            TEXT             NOT NULL,
    open                DOUBLE PRECISION NOT NULL,
    high                DOUBLE PRECISION NOT NULL,
    low                 DOUBLE PRECISION NOT NULL,
    close               DOUBLE PRECISION NOT NULL,
    volume              DOUBLE PRECISION NOT NULL,
    close_time          TIMESTAMPTZ      NOT NULL,
    quote_asset_volume  DOUBLE PRECISION NOT NULL,
    number_of_trades    BIGINT           NOT NULL,
    taker_buy_base      DOUBLE PRECISION NOT NULL,
    taker_buy_quote     DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (symbol, interval, ts)
);
