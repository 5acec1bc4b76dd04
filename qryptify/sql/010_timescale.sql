-- TimescaleDB when the extension is available: 1-day chunks on ts, compression segmented by
-- pair and ordered by ts DESC, compressed after 7 days. Without the extension (or when it
-- cannot be loaded) candlesticks stays a plain table with the same columns and key.
DO $migration$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        RAISE NOTICE 'timescaledb not available: candlesticks stays a plain table';
        RETURN;
    END IF;
    BEGIN
        EXECUTE 'CREATE EXTENSION IF NOT EXISTS timescaledb';
    EXCEPTION WHEN OTHERS THEN
        RAISE NOTICE 'timescaledb present but not loadable (%): plain table', SQLERRM;
        RETURN;
    END;
    PERFORM create_hypertable('candlesticks', by_range('ts', INTERVAL '1 day'),
                              if_not_exists => TRUE, migrate_data => TRUE);
    IF NOT EXISTS (SELECT 1 FROM timescaledb_information.compression_settings
                   WHERE hypertable_name = 'candlesticks') THEN
        EXECUTE $sql$ALTER TABLE candlesticks SET (
            timescaledb.compress,
            timescaledb.compress_segmentby = 'symbol, interval',
            timescaledb.compress_orderby = 'ts DESC')$sql$;
    END IF;
    PERFORM add_compression_policy('candlesticks', INTERVAL '7 days', if_not_exists => TRUE);
END
$migration$;
