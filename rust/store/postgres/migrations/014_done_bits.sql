-- fastjobs schema, version 14: a completed job with a generated id and no result is a bit,
-- not a row (benches/RESULTS.md, "PostgreSQL: completions as bits"). As the Redis store's
-- `done:<producer>` bitmaps: a row per (queue, producer, block of 1024 sequence numbers),
-- updated once per block an acknowledgement touches, where a `results` row per job cost an
-- insert into a table and two indexes. A queue with its events stream on keeps the rows
-- (`events_ended` tells of completions from them).
CREATE TABLE IF NOT EXISTS fastjobs.done (
  queue text NOT NULL,
  producer text NOT NULL,
  block bigint NOT NULL,
  -- Bit i (from the left): the job `<producer>-<block * 1024 + i>` completed.
  bits bit(1024) NOT NULL,
  -- The block's marks are kept until then (30 days after its last completion).
  expires_ms bigint NOT NULL,
  PRIMARY KEY (queue, producer, block)
);
CREATE INDEX IF NOT EXISTS done_expiry ON fastjobs.done (queue, expires_ms);

-- Whether `jid` is a generated id (record.rs is_generated_id: 10 letters or digits, '-', up
-- to 8 digits, no leading zero). No bounded repetition: PostgreSQL's regular expressions
-- matched `{10}` several times slower than these tests.
CREATE OR REPLACE FUNCTION fastjobs.is_generated(jid text) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
  SELECT length(jid) BETWEEN 12 AND 19 AND substr(jid, 11, 1) = '-' AND jid ~ '^[A-Za-z0-9]+-[0-9]+$'
         AND (substr(jid, 12, 1) <> '0' OR length(jid) = 12)
$$;

-- A generated id's block and bit; NULL for any other id.
CREATE OR REPLACE FUNCTION fastjobs.done_block(jid text) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE WHEN fastjobs.is_generated(jid) THEN substr(jid, 12)::bigint >> 10 END
$$;
CREATE OR REPLACE FUNCTION fastjobs.done_bit(jid text) RETURNS bit(1024) LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE WHEN fastjobs.is_generated(jid) THEN B'1'::bit(1024) >> (substr(jid, 12)::integer & 1023) END
$$;

-- Whether the job with generated id `jid` completed (its bit set, the block not past its time).
CREATE OR REPLACE FUNCTION fastjobs.done_has(q text, jid text, now_ms bigint) RETURNS boolean LANGUAGE sql STABLE AS $$
  SELECT coalesce((SELECT (d.bits & fastjobs.done_bit(jid)) <> B'0'::bit(1024) FROM fastjobs.done d
                   WHERE d.queue = q AND d.producer = left(jid, 10) AND d.block = fastjobs.done_block(jid) AND d.expires_ms > now_ms), false)
$$;

-- status of version 1: a job not found in `jobs` nor `results` may be a bit of `done`.
CREATE OR REPLACE FUNCTION fastjobs.status(q text, jid text, OUT state text, OUT record bytea, OUT data bytea)
LANGUAGE plpgsql STABLE AS $$
DECLARE
  now_ms bigint := fastjobs.now_us() / 1000;
  s "char";
BEGIN
  SELECT j.state, j.record, CASE WHEN j.state IN ('f', 'd') THEN j.error END INTO s, record, data
  FROM fastjobs.jobs j WHERE j.queue = q AND j.id = jid;
  IF FOUND THEN
    state := CASE s WHEN 'w' THEN 'waiting' WHEN 'd' THEN 'delayed' WHEN 'a' THEN 'active' ELSE 'failed' END;
    RETURN;
  END IF;
  SELECT r.state, CASE WHEN r.state = 'c' THEN coalesce(CASE WHEN r.data_expires_ms > now_ms THEN r.data END, 'null') END
  INTO s, data FROM fastjobs.results r WHERE r.queue = q AND r.id = jid AND r.expires_ms > now_ms;
  IF NOT FOUND AND fastjobs.is_generated(jid) AND fastjobs.done_has(q, jid, now_ms) THEN
    s := 'c';
    data := 'null';
  END IF;
  state := CASE s WHEN 'c' THEN 'completed' WHEN 'x' THEN 'cancelled' ELSE 'unknown' END;
END $$;

-- forget of version 1: a removed job's bit is cleared too.
CREATE OR REPLACE FUNCTION fastjobs.forget(q text, jid text) RETURNS void LANGUAGE sql AS $$
  DELETE FROM fastjobs.results WHERE queue = q AND id = jid;
  DELETE FROM fastjobs.progress WHERE queue = q AND id = jid;
  DELETE FROM fastjobs.logs WHERE queue = q AND id = jid;
  DELETE FROM fastjobs.callbacks WHERE queue = q AND id = jid;
  UPDATE fastjobs.done d SET bits = d.bits & ~fastjobs.done_bit(jid)
  WHERE d.queue = q AND d.producer = left(jid, 10) AND d.block = fastjobs.done_block(jid);
$$;

-- ack of version 12: a completed job with a generated id and no result sets its bit (one
-- upsert per block), unless the queue's events stream is on; waiters are looked for only when
-- the queue has any.
CREATE OR REPLACE FUNCTION fastjobs.ack(q text, tok text, kinds "char"[], ids text[], results bytea[], delays bigint[],
                                        recs bytea[], errors bytea[], result_ttl_ms bigint, mark_ttl_ms bigint)
RETURNS bigint[] LANGUAGE plpgsql SET enable_nestloop = off AS $$
DECLARE
  now_us bigint := fastjobs.now_us();
  now_ms bigint := now_us / 1000;
  c bigint; r bigint; f bigint; x bigint; missing "char"[];
  refused bigint := 0;
  woke boolean; later boolean;
  qu fastjobs.queues;
  use_bits boolean;
BEGIN
  SELECT * INTO qu FROM fastjobs.queues WHERE name = q;
  use_bits := qu.events_keep IS NULL;
  WITH e AS (
    SELECT * FROM unnest(kinds, ids, results, delays, recs, errors) AS e(kind, id, result, delay_ms, rec, err)
  ), ended AS (
    DELETE FROM fastjobs.jobs j USING e
    WHERE j.queue = q AND j.id = e.id AND j.state = 'a' AND j.token = tok AND e.kind IN ('c', 'x')
    RETURNING e.kind, e.id, e.result,
              use_bits AND e.kind = 'c' AND e.result IS NULL AND NOT j.custom AND fastjobs.is_generated(e.id) AS as_bit
  ), kept AS (
    INSERT INTO fastjobs.results (queue, id, state, data, data_expires_ms, expires_ms)
    SELECT q, id, kind, result, now_ms + result_ttl_ms, now_ms + mark_ttl_ms FROM ended WHERE NOT as_bit
    ON CONFLICT (queue, id) DO UPDATE SET state = excluded.state, data = excluded.data,
      data_expires_ms = excluded.data_expires_ms, expires_ms = excluded.expires_ms
  ), marked AS (
    INSERT INTO fastjobs.done AS d (queue, producer, block, bits, expires_ms)
    SELECT q, left(id, 10), substr(id, 12)::bigint >> 10, bit_or(B'1'::bit(1024) >> (substr(id, 12)::integer & 1023)),
           now_ms + mark_ttl_ms
    FROM ended WHERE as_bit GROUP BY left(id, 10), substr(id, 12)::bigint >> 10
    ON CONFLICT (queue, producer, block) DO UPDATE SET bits = d.bits | excluded.bits, expires_ms = excluded.expires_ms
  ), moved AS (
    UPDATE fastjobs.jobs j SET
      state = CASE WHEN e.kind = 'f' THEN 'f' WHEN e.delay_ms > 0 THEN 'd' ELSE 'w' END,
      record = e.rec, error = e.err, token = NULL, started_ms = NULL, cancel_asked = false,
      due_us = CASE WHEN e.kind = 'r' AND e.delay_ms > 0 THEN now_us + e.delay_ms * 1000 END,
      failed_ms = CASE WHEN e.kind = 'f' THEN now_ms END,
      seq = CASE WHEN e.kind = 'r' THEN nextval('fastjobs.job_seq') ELSE j.seq END
    FROM e WHERE j.queue = q AND j.id = e.id AND j.state = 'a' AND j.token = tok AND e.kind IN ('r', 'f')
    RETURNING e.kind, e.id, j.state
  ), done AS (
    SELECT kind, id, NULL::"char" AS state FROM ended UNION ALL SELECT kind, id, state FROM moved
  )
  SELECT count(*) FILTER (WHERE d.kind = 'c'), count(*) FILTER (WHERE d.kind = 'r'),
         count(*) FILTER (WHERE d.kind = 'f'), count(*) FILTER (WHERE d.kind = 'x'),
         array_agg(e.kind) FILTER (WHERE d.id IS NULL),
         coalesce(bool_or(d.state = 'w'), false), coalesce(bool_or(d.state = 'd'), false)
  INTO c, r, f, x, missing, woke, later
  FROM e LEFT JOIN done d ON d.id = e.id;
  IF c + r + x > 0 THEN
    UPDATE fastjobs.queues SET completed = completed + c, retried = retried + r, cancelled = cancelled + x WHERE name = q;
  END IF;
  IF missing IS NOT NULL THEN
    IF EXISTS (SELECT 1 FROM fastjobs.reaped WHERE queue = q AND token = tok) THEN
      refused := cardinality(missing);
    ELSE
      c := c + cardinality(array_positions(missing, 'c'));
      r := r + cardinality(array_positions(missing, 'r'));
      f := f + cardinality(array_positions(missing, 'f'));
      x := x + cardinality(array_positions(missing, 'x'));
    END IF;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM fastjobs.jobs WHERE queue = q AND state = 'a' AND token = tok) THEN
    DELETE FROM fastjobs.leases WHERE queue = q AND token = tok;
  END IF;
  IF EXISTS (SELECT 1 FROM fastjobs.waiters WHERE queue = q) THEN
    PERFORM fastjobs.tell_waiters(q, array_agg(id)) FROM unnest(kinds, ids) AS e(kind, id) WHERE kind <> 'r';
  END IF;
  -- Under a concurrency limit a settled job frees a slot: wake a worker for it.
  IF woke OR (c + r + f + x > 0 AND (qu.concurrency IS NOT NULL OR qu.g_concurrency IS NOT NULL)) THEN
    PERFORM pg_notify('fastjobs_wake', q);
  END IF;
  IF later THEN PERFORM pg_notify('fastjobs_sched', q); END IF;
  RETURN ARRAY[c, r, f, refused, x];
END $$;

-- housekeep of version 6, with the blocks of `done` past their time.
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
  DELETE FROM fastjobs.done WHERE (queue, producer, block) IN (
    SELECT queue, producer, block FROM fastjobs.done WHERE queue = q AND expires_ms < now_ms LIMIT lim);
  GET DIAGNOSTICS n = ROW_COUNT; total := total + n;
  DELETE FROM fastjobs.books WHERE book IN (
    SELECT book FROM fastjobs.books WHERE expires_ms < now_ms LIMIT lim);
  GET DIAGNOSTICS n = ROW_COUNT; total := total + n;
  RETURN total;
END $$;

-- obliterate of version 8, with the queue's blocks of `done`.
CREATE OR REPLACE FUNCTION fastjobs.obliterate(q text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  total bigint := 0;
  n bigint;
  t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['jobs', 'leases', 'reaped', 'results', 'waiters', 'chunks', 'progress', 'logs', 'callbacks',
                           'dedup', 'gwindows', 'gturns', 'events', 'done'] LOOP
    EXECUTE format('DELETE FROM fastjobs.%I WHERE queue = $1', t) USING q;
    GET DIAGNOSTICS n = ROW_COUNT;
    total := total + n;
  END LOOP;
  DELETE FROM fastjobs.queues WHERE name = q;
  RETURN total;
END $$;

-- enqueue_staged of version 5 without ON CONFLICT: a guarded chunk's generated ids are new,
-- and an insert that checks each row's key before it writes cost as much again as one that
-- does not (a chunk of 10,000: ~22 µs a job against ~11). Should one exist all the same, the
-- chunk is written again skipping it, as before.
CREATE OR REPLACE FUNCTION fastjobs.enqueue_staged(q text, delay_us bigint, at_us bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
  now_us bigint := fastjobs.now_us();
  due bigint := coalesce(at_us, now_us + delay_us);
  later boolean := due > now_us;
  n bigint;
BEGIN
  INSERT INTO fastjobs.queues (name) VALUES (q) ON CONFLICT DO NOTHING;
  BEGIN
    INSERT INTO fastjobs.jobs (queue, id, state, priority, seq, due_us, record)
    SELECT q, s.id, CASE WHEN later THEN 'd' ELSE 'w' END, fastjobs.record_priority(s.record), nextval('fastjobs.job_seq'),
           CASE WHEN later THEN due END, s.record
    FROM pg_temp.fastjobs_staging s ORDER BY s.ord;
  EXCEPTION WHEN unique_violation THEN
    INSERT INTO fastjobs.jobs (queue, id, state, priority, seq, due_us, record)
    SELECT q, s.id, CASE WHEN later THEN 'd' ELSE 'w' END, fastjobs.record_priority(s.record), nextval('fastjobs.job_seq'),
           CASE WHEN later THEN due END, s.record
    FROM pg_temp.fastjobs_staging s ORDER BY s.ord
    ON CONFLICT DO NOTHING;
  END;
  GET DIAGNOSTICS n = ROW_COUNT;
  IF n > 0 THEN PERFORM pg_notify(CASE WHEN later THEN 'fastjobs_sched' ELSE 'fastjobs_wake' END, q); END IF;
  RETURN n;
END $$;
