-- fastjobs schema, version 6: rows past their time go, a page at a time (the Redis store's
-- keys expire by themselves). `fastjobs.housekeep` runs at most once a minute per queue and
-- process, after a tick.
CREATE INDEX IF NOT EXISTS progress_expiry ON fastjobs.progress (queue, expires_ms);
CREATE INDEX IF NOT EXISTS logs_expiry ON fastjobs.logs (queue, expires_ms);
CREATE INDEX IF NOT EXISTS callbacks_expiry ON fastjobs.callbacks (queue, expires_ms);
CREATE INDEX IF NOT EXISTS dedup_expiry ON fastjobs.dedup (queue, expires_ms);
CREATE INDEX IF NOT EXISTS chunks_age ON fastjobs.chunks (queue, at_ms);
CREATE INDEX IF NOT EXISTS books_expiry ON fastjobs.books (expires_ms);

-- Deletes up to `lim` rows of each kind past their time: progress, log lines, callback
-- records, deduplication keys and chunk guards of queue `q` (guards after 30 days, as the
-- Redis store's sent-chunk bitmaps), and workflow records of any queue. Returns how many.
CREATE OR REPLACE FUNCTION fastjobs.housekeep(q text, lim integer) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  now_ms bigint := fastjobs.now_us() / 1000;
  total bigint := 0;
  n bigint;
BEGIN
  DELETE FROM fastjobs.progress WHERE queue = q AND id IN (
    SELECT id FROM fastjobs.progress WHERE queue = q AND expires_ms < now_ms LIMIT lim);
  GET DIAGNOSTICS n = ROW_COUNT; total := total + n;
  DELETE FROM fastjobs.logs WHERE (queue, id, seq) IN (
    SELECT queue, id, seq FROM fastjobs.logs WHERE queue = q AND expires_ms < now_ms LIMIT lim);
  GET DIAGNOSTICS n = ROW_COUNT; total := total + n;
  DELETE FROM fastjobs.callbacks WHERE (queue, id, field) IN (
    SELECT queue, id, field FROM fastjobs.callbacks WHERE queue = q AND expires_ms < now_ms LIMIT lim);
  GET DIAGNOSTICS n = ROW_COUNT; total := total + n;
  DELETE FROM fastjobs.dedup WHERE queue = q AND key IN (
    SELECT key FROM fastjobs.dedup WHERE queue = q AND expires_ms < now_ms LIMIT lim);
  GET DIAGNOSTICS n = ROW_COUNT; total := total + n;
  DELETE FROM fastjobs.chunks WHERE (queue, producer, first_seq) IN (
    SELECT queue, producer, first_seq FROM fastjobs.chunks WHERE queue = q AND at_ms < now_ms - 2592000000 LIMIT lim);
  GET DIAGNOSTICS n = ROW_COUNT; total := total + n;
  DELETE FROM fastjobs.books WHERE book IN (
    SELECT book FROM fastjobs.books WHERE expires_ms < now_ms LIMIT lim);
  GET DIAGNOSTICS n = ROW_COUNT; total := total + n;
  RETURN total;
END $$;
