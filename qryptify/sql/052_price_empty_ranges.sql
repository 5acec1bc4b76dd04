-- Optional futures data (config `futures`: mark_price, index_price, premium_index): the open
-- times each price kind's series has no candle for, as the exchange confirmed them (the
-- `empty_ranges` of these kinds, one table per kind beside its kline table). Status subtracts
-- them from gaps; nothing is ever fabricated to fill them.
CREATE TABLE IF NOT EXISTS mark_price_empty_ranges (LIKE empty_ranges INCLUDING ALL);
CREATE TABLE IF NOT EXISTS index_price_empty_ranges (LIKE empty_ranges INCLUDING ALL);
CREATE TABLE IF NOT EXISTS premium_index_empty_ranges (LIKE empty_ranges INCLUDING ALL);
