-- fastjobs schema, version 8: the events stream (docs/DESIGN.md "Events"). While a queue's
-- `events_keep` is set, every statement that changes its jobs adds, in the same statement,
-- one row per kind of change listing the jobs (their ids, names, attempts and what the kind
-- carries), so the stream's order is the order the changes were applied, whoever made them.
-- Written by statement triggers on `jobs` and `results`: every path that moves a job tells
-- it, and none has to know. `fastjobs.housekeep` trims a queue's stream to about `keep` rows.
ALTER TABLE fastjobs.queues ADD COLUMN IF NOT EXISTS events_keep bigint;
CREATE SEQUENCE IF NOT EXISTS fastjobs.event_seq;
CREATE TABLE IF NOT EXISTS fastjobs.events (
  queue text NOT NULL,
  seq bigint NOT NULL DEFAULT nextval('fastjobs.event_seq'),
  at_ms bigint NOT NULL,
  kind text NOT NULL,
  ids text[] NOT NULL,
  -- Per job, NULL where unknown: its name, its attempt, its due time (µs), the result or
  -- error JSON.
  names text[],
  attempts integer[],
  due_us bigint[],
  data bytea[],
  PRIMARY KEY (queue, seq)
);

-- The name of a record's job.
CREATE OR REPLACE FUNCTION fastjobs.record_name(rec bytea) RETURNS text LANGUAGE sql IMMUTABLE AS $$
  SELECT convert_from(substring(rec FROM 9 + get_byte(rec, 6) FOR get_byte(rec, 7 + get_byte(rec, 6))), 'UTF8')
$$;

CREATE OR REPLACE FUNCTION fastjobs.record_attempt(rec bytea) RETURNS integer LANGUAGE sql IMMUTABLE AS $$
  SELECT get_byte(rec, 1) * 256 + get_byte(rec, 2)
$$;

-- Jobs written: waiting or delayed.
CREATE OR REPLACE FUNCTION fastjobs.events_written() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO fastjobs.events (queue, at_ms, kind, ids, names, due_us)
  SELECT n.queue, fastjobs.now_us() / 1000, CASE n.state WHEN 'w' THEN 'waiting' ELSE 'delayed' END,
         array_agg(n.id ORDER BY n.seq), array_agg(fastjobs.record_name(n.record) ORDER BY n.seq), array_agg(n.due_us ORDER BY n.seq)
  FROM new_rows n JOIN fastjobs.queues qu ON qu.name = n.queue AND qu.events_keep IS NOT NULL
  GROUP BY n.queue, n.state
  ORDER BY n.queue, n.state DESC;
  RETURN NULL;
END $$;

-- Jobs that changed state: leased (active), handed back (waiting), reaped (stalled), put to
-- run again (retrying), failed for good, promoted or retried from failed (waiting), a
-- debounced record replaced (delayed).
CREATE OR REPLACE FUNCTION fastjobs.events_moved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO fastjobs.events (queue, at_ms, kind, ids, names, attempts, due_us, data)
  SELECT m.queue, fastjobs.now_us() / 1000, m.kind, array_agg(m.id ORDER BY m.seq), array_agg(m.name ORDER BY m.seq),
         array_agg(m.attempt ORDER BY m.seq), array_agg(m.due_us ORDER BY m.seq),
         array_agg(CASE WHEN m.kind IN ('failed', 'retrying') THEN m.error END ORDER BY m.seq)
  FROM (
    SELECT n.queue, n.id, n.seq, fastjobs.record_name(n.record) AS name, fastjobs.record_attempt(o.record) AS attempt, n.due_us,
           n.error,
           CASE
             WHEN o.state = 'w' AND n.state = 'a' THEN 'active'
             WHEN o.state = 'a' AND n.state = 'f' THEN 'failed'
             WHEN o.state = 'a' AND n.state = 'd' THEN 'retrying'
             WHEN o.state = 'a' AND n.state = 'w' AND get_byte(n.record, 0) = 1
                  AND fastjobs.record_attempt(n.record) > fastjobs.record_attempt(o.record) THEN 'retrying'
             WHEN o.state = 'a' AND n.state = 'w' AND get_byte(n.record, 0) = 2 AND n.record IS DISTINCT FROM o.record THEN 'stalled'
             WHEN o.state <> 'w' AND n.state = 'w' THEN 'waiting'
             WHEN o.state = 'd' AND n.state = 'd' AND n.record IS DISTINCT FROM o.record THEN 'delayed'
           END AS kind
    FROM new_rows n JOIN old_rows o ON o.queue = n.queue AND o.id = n.id
    JOIN fastjobs.queues qu ON qu.name = n.queue AND qu.events_keep IS NOT NULL
  ) m
  WHERE m.kind IS NOT NULL
  GROUP BY m.queue, m.kind
  ORDER BY m.queue, m.kind;
  RETURN NULL;
END $$;

-- Jobs that ended: completed (with their results) or cancelled.
CREATE OR REPLACE FUNCTION fastjobs.events_ended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO fastjobs.events (queue, at_ms, kind, ids, data)
  SELECT n.queue, fastjobs.now_us() / 1000, CASE n.state WHEN 'c' THEN 'completed' ELSE 'cancelled' END,
         array_agg(n.id ORDER BY n.id), array_agg(n.data ORDER BY n.id)
  FROM new_rows n JOIN fastjobs.queues qu ON qu.name = n.queue AND qu.events_keep IS NOT NULL
  GROUP BY n.queue, n.state;
  RETURN NULL;
END $$;

-- Jobs whose row went without an end (removed).
CREATE OR REPLACE FUNCTION fastjobs.events_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO fastjobs.events (queue, at_ms, kind, ids, names)
  SELECT o.queue, fastjobs.now_us() / 1000, 'removed', array_agg(o.id ORDER BY o.seq), array_agg(fastjobs.record_name(o.record) ORDER BY o.seq)
  FROM old_rows o JOIN fastjobs.queues qu ON qu.name = o.queue AND qu.events_keep IS NOT NULL
  WHERE NOT EXISTS (SELECT 1 FROM fastjobs.results r WHERE r.queue = o.queue AND r.id = o.id)
  GROUP BY o.queue;
  RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS events_written ON fastjobs.jobs;
CREATE TRIGGER events_written AFTER INSERT ON fastjobs.jobs REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION fastjobs.events_written();
DROP TRIGGER IF EXISTS events_moved ON fastjobs.jobs;
CREATE TRIGGER events_moved AFTER UPDATE ON fastjobs.jobs REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION fastjobs.events_moved();
DROP TRIGGER IF EXISTS events_removed ON fastjobs.jobs;
CREATE TRIGGER events_removed AFTER DELETE ON fastjobs.jobs REFERENCING OLD TABLE AS old_rows
  FOR EACH STATEMENT EXECUTE FUNCTION fastjobs.events_removed();
DROP TRIGGER IF EXISTS events_ended ON fastjobs.results;
CREATE TRIGGER events_ended AFTER INSERT ON fastjobs.results REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION fastjobs.events_ended();

-- Switches a queue's stream on (about `keep` rows kept) or off (NULL).
CREATE OR REPLACE FUNCTION fastjobs.set_events(q text, keep bigint) RETURNS void LANGUAGE sql AS $$
  INSERT INTO fastjobs.queues (name, events_keep) VALUES (q, keep) ON CONFLICT (name) DO UPDATE SET events_keep = keep;
$$;

-- Trims a queue's stream to about its `keep` newest rows (a stream switched off stays).
CREATE OR REPLACE FUNCTION fastjobs.events_trim(q text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  keep bigint := (SELECT events_keep FROM fastjobs.queues WHERE name = q);
  n bigint;
BEGIN
  IF keep IS NULL THEN RETURN 0; END IF;
  DELETE FROM fastjobs.events WHERE queue = q AND seq < coalesce(
    (SELECT seq FROM fastjobs.events WHERE queue = q ORDER BY seq DESC OFFSET keep LIMIT 1) + 1, 0);
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END $$;

-- obliterate of version 7, with the queue's events.
CREATE OR REPLACE FUNCTION fastjobs.obliterate(q text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  total bigint := 0;
  n bigint;
  t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['jobs', 'leases', 'reaped', 'results', 'waiters', 'chunks', 'progress', 'logs', 'callbacks',
                           'dedup', 'gwindows', 'gturns', 'events'] LOOP
    EXECUTE format('DELETE FROM fastjobs.%I WHERE queue = $1', t) USING q;
    GET DIAGNOSTICS n = ROW_COUNT;
    total := total + n;
  END LOOP;
  DELETE FROM fastjobs.queues WHERE name = q;
  RETURN total;
END $$;
