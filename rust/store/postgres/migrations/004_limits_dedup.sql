-- fastjobs schema, version 4: queue limits (rust/lua/limit.lua and reserve.lua's gates) and
-- deduplication keys (enqueue.lua's deduplicate).

-- A queue's limits: at most `rate_max` jobs leased per window of `rate_period_ms` (a fixed
-- window opened by the first lease after the last one ended: `window_end_ms`, `window_used`),
-- at most `concurrency` jobs leased at once.
ALTER TABLE fastjobs.queues ADD COLUMN IF NOT EXISTS rate_max bigint;
ALTER TABLE fastjobs.queues ADD COLUMN IF NOT EXISTS rate_period_ms bigint;
ALTER TABLE fastjobs.queues ADD COLUMN IF NOT EXISTS concurrency bigint;
ALTER TABLE fastjobs.queues ADD COLUMN IF NOT EXISTS window_end_ms bigint;
ALTER TABLE fastjobs.queues ADD COLUMN IF NOT EXISTS window_used bigint NOT NULL DEFAULT 0;

-- A deduplication key is held by one job (`job_id`) until `expires_ms`; a key held until its
-- job settles is also named by the job's row (`dedup_key`), which releases it.
CREATE TABLE IF NOT EXISTS fastjobs.dedup (
  queue text NOT NULL,
  key text NOT NULL,
  job_id text NOT NULL,
  expires_ms bigint NOT NULL,
  PRIMARY KEY (queue, key)
);
ALTER TABLE fastjobs.jobs ADD COLUMN IF NOT EXISTS dedup_key text;

-- A job holding its key until it settles releases it when it ends (its row goes: completed,
-- cancelled, removed) or fails for good, wherever that happens (ack, tick, cancel): one place.
CREATE OR REPLACE FUNCTION fastjobs.dedup_release() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM fastjobs.dedup WHERE queue = OLD.queue AND key = OLD.dedup_key AND job_id = OLD.id;
  RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS dedup_settled ON fastjobs.jobs;
CREATE TRIGGER dedup_settled AFTER DELETE ON fastjobs.jobs
  FOR EACH ROW WHEN (OLD.dedup_key IS NOT NULL) EXECUTE FUNCTION fastjobs.dedup_release();
DROP TRIGGER IF EXISTS dedup_failed ON fastjobs.jobs;
CREATE TRIGGER dedup_failed AFTER UPDATE OF state ON fastjobs.jobs
  FOR EACH ROW WHEN (OLD.dedup_key IS NOT NULL AND NEW.state = 'f') EXECUTE FUNCTION fastjobs.dedup_release();

-- A job with a deduplication key `k` before it is written: the id of the job holding the key
-- (this dispatch goes no further; debounced, that delayed job took this record and due time),
-- or NULL after this job took the key. `mode`: 't<ms>' held that long, 'u' until the job
-- settles, 'd' debounce; `ttl_ms` bounds the marks of 'u' and 'd'.
CREATE OR REPLACE FUNCTION fastjobs.dedup_hold(q text, k text, mode text, jid text, rec bytea, due_us bigint, ttl_ms bigint)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  now_ms bigint := fastjobs.now_us() / 1000;
  held text;
  old bytea;
  n integer;
  life bigint := CASE WHEN left(mode, 1) = 't' THEN substr(mode, 2)::bigint ELSE ttl_ms END;
BEGIN
  SELECT d.job_id INTO held FROM fastjobs.dedup d WHERE d.queue = q AND d.key = k AND d.expires_ms > now_ms FOR UPDATE;
  IF held IS NOT NULL AND left(mode, 1) = 'd' THEN
    -- Debounce: the holder is replaced while it is delayed and never ran; else this dispatch
    -- is a new job holding the key.
    SELECT j.record INTO old FROM fastjobs.jobs j WHERE j.queue = q AND j.id = held AND j.state = 'd' FOR UPDATE;
    IF old IS NOT NULL AND get_byte(old, 0) = 1 AND get_byte(old, 1) = 0 AND get_byte(old, 2) = 0 THEN
      n := get_byte(rec, 6);
      UPDATE fastjobs.jobs j SET due_us = dedup_hold.due_us,
        record = substring(rec FROM 1 FOR 6) || set_byte('\x00'::bytea, 0, octet_length(convert_to(held, 'UTF8')))
                 || convert_to(held, 'UTF8') || substring(rec FROM 8 + n)
      WHERE j.queue = q AND j.id = held;
      UPDATE fastjobs.dedup d SET expires_ms = now_ms + life WHERE d.queue = q AND d.key = k;
      RETURN held;
    END IF;
    held := NULL;
  END IF;
  IF held IS NOT NULL THEN RETURN held; END IF;
  INSERT INTO fastjobs.dedup VALUES (q, k, jid, now_ms + life)
  ON CONFLICT (queue, key) DO UPDATE SET job_id = excluded.job_id, expires_ms = excluded.expires_ms;
  RETURN NULL;
END $$;

-- enqueue_many of version 1, with deduplication keys (`dkeys`, `dmodes`: NULL for a job
-- without one; `ttl_ms` the marks' time beyond the due time). Answers per job: 'n' written,
-- 'e' a job with that caller-chosen id exists, or 'd' followed by the id of the job holding
-- the deduplication key; NULL for a guarded chunk written already.
DROP FUNCTION IF EXISTS fastjobs.enqueue(text, text, bytea, boolean, bigint, bigint);
DROP FUNCTION IF EXISTS fastjobs.enqueue_many(text, text[], bytea[], boolean[], bigint[], bigint[], text, bigint);
CREATE OR REPLACE FUNCTION fastjobs.enqueue_many(q text, ids text[], recs bytea[], customs boolean[], delays bigint[], ats bigint[],
                                                 producer text DEFAULT NULL, guard bigint DEFAULT NULL,
                                                 dkeys text[] DEFAULT NULL, dmodes text[] DEFAULT NULL, ttl_ms bigint DEFAULT 2592000000)
RETURNS text[] LANGUAGE plpgsql AS $$
DECLARE
  now_us bigint := fastjobs.now_us();
  out text[];
  held text[];
  ready boolean;
  delayed boolean;
  i integer;
  due bigint;
BEGIN
  IF guard IS NOT NULL THEN
    INSERT INTO fastjobs.chunks VALUES (q, producer, guard, now_us / 1000) ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN RETURN NULL; END IF;
  END IF;
  INSERT INTO fastjobs.queues (name) VALUES (q) ON CONFLICT DO NOTHING;
  IF dkeys IS NOT NULL THEN
    held := array_fill(NULL::text, ARRAY[cardinality(ids)]);
    FOR i IN 1 .. cardinality(ids) LOOP
      IF dkeys[i] IS NOT NULL THEN
        due := coalesce(ats[i], now_us + delays[i]);
        held[i] := fastjobs.dedup_hold(q, dkeys[i], dmodes[i], ids[i], recs[i], due,
                                       ttl_ms + greatest(0, (due - now_us) / 1000));
      END IF;
    END LOOP;
  END IF;
  WITH e AS (
    SELECT e.id, e.rec, e.custom, coalesce(e.at_us, now_us + e.delay_us) AS due_us, e.ord,
           CASE WHEN dkeys IS NOT NULL THEN held[e.ord] END AS holder,
           CASE WHEN dkeys IS NOT NULL AND dmodes[e.ord] = 'u' THEN dkeys[e.ord] END AS until_settled
    FROM unnest(ids, recs, customs, delays, ats) WITH ORDINALITY AS e(id, rec, custom, delay_us, at_us, ord)
  ), fresh AS (
    SELECT e.* FROM e
    WHERE e.holder IS NULL
      AND NOT (e.custom AND EXISTS (SELECT 1 FROM fastjobs.results r WHERE r.queue = q AND r.id = e.id AND r.expires_ms > now_us / 1000))
    ORDER BY ord
  ), ins AS (
    INSERT INTO fastjobs.jobs (queue, id, state, priority, seq, due_us, custom, record, dedup_key)
    SELECT q, f.id, CASE WHEN f.due_us > now_us THEN 'd' ELSE 'w' END, fastjobs.record_priority(f.rec),
           nextval('fastjobs.job_seq'), CASE WHEN f.due_us > now_us THEN f.due_us END, f.custom, f.rec, f.until_settled
    FROM fresh f ORDER BY f.ord
    ON CONFLICT DO NOTHING
    RETURNING id, state
  )
  SELECT array_agg(CASE WHEN e.holder IS NOT NULL THEN 'd' || e.holder WHEN ins.id IS NOT NULL THEN 'n' ELSE 'e' END ORDER BY e.ord),
         bool_or(ins.state = 'w'), bool_or(ins.state = 'd') OR bool_or(e.holder IS NOT NULL AND dmodes[e.ord] = 'd')
  INTO out, ready, delayed
  FROM e LEFT JOIN ins ON ins.id = e.id AND e.holder IS NULL;
  IF ready THEN PERFORM pg_notify('fastjobs_wake', q); END IF;
  IF delayed THEN PERFORM pg_notify('fastjobs_sched', q); END IF;
  RETURN coalesce(out, '{}');
END $$;

CREATE OR REPLACE FUNCTION fastjobs.enqueue(q text, id text, rec bytea, custom boolean DEFAULT true, delay_us bigint DEFAULT 0,
                                            at_us bigint DEFAULT NULL)
RETURNS boolean LANGUAGE sql AS $$
  SELECT (fastjobs.enqueue_many(q, ARRAY[id], ARRAY[rec], ARRAY[custom], ARRAY[delay_us], ARRAY[at_us]))[1] = 'n'
$$;

-- reserve of version 1, with the queue's limits: `recs` the records leased (NULL: the queue is
-- paused), `wait_ms` when a limit allows nothing now: ms until the rate window ends, or -1
-- (the concurrency limit: a settled job frees a slot and wakes the queue).
DROP FUNCTION IF EXISTS fastjobs.reserve(text, text, integer, bigint);
CREATE OR REPLACE FUNCTION fastjobs.reserve(q text, tok text, n integer, lease_ms bigint, OUT recs bytea[], OUT wait_ms bigint)
LANGUAGE plpgsql AS $$
DECLARE
  now_ms bigint := fastjobs.now_us() / 1000;
  qu fastjobs.queues;
  want integer := n;
  held bigint;
BEGIN
  SELECT * INTO qu FROM fastjobs.queues WHERE name = q;
  IF qu.paused THEN RETURN; END IF;
  IF qu.rate_max IS NOT NULL OR qu.concurrency IS NOT NULL THEN
    -- Limits are counted across every worker: one reserve of the queue at a time.
    SELECT * INTO qu FROM fastjobs.queues WHERE name = q FOR UPDATE;
    IF qu.concurrency IS NOT NULL THEN
      SELECT count(*) INTO held FROM fastjobs.jobs WHERE queue = q AND state = 'a';
      want := least(want, qu.concurrency - held);
      IF want <= 0 THEN recs := '{}'; wait_ms := -1; RETURN; END IF;
    END IF;
    IF qu.rate_max IS NOT NULL THEN
      IF qu.window_end_ms IS NULL OR qu.window_end_ms <= now_ms THEN
        qu.window_used := 0;
        qu.window_end_ms := NULL;
      END IF;
      IF qu.window_used >= qu.rate_max THEN recs := '{}'; wait_ms := qu.window_end_ms - now_ms; RETURN; END IF;
      want := least(want, qu.rate_max - qu.window_used);
    END IF;
  END IF;
  WITH picked AS (
    SELECT id FROM fastjobs.jobs WHERE queue = q AND state = 'w'
    ORDER BY priority DESC, seq LIMIT want FOR UPDATE SKIP LOCKED
  ), leased AS (
    UPDATE fastjobs.jobs j SET state = 'a', token = tok, started_ms = NULL, cancel_asked = false
    FROM picked WHERE j.queue = q AND j.id = picked.id
    RETURNING j.record, j.priority, j.seq
  )
  SELECT array_agg(record ORDER BY priority DESC, seq) INTO recs FROM leased;
  IF recs IS NULL THEN recs := '{}'; RETURN; END IF;
  INSERT INTO fastjobs.leases VALUES (q, tok, now_ms + lease_ms)
  ON CONFLICT (queue, token) DO UPDATE SET deadline_ms = excluded.deadline_ms;
  IF qu.rate_max IS NOT NULL THEN
    -- The window opens with its first lease and lasts its period.
    UPDATE fastjobs.queues SET window_used = qu.window_used + cardinality(recs),
      window_end_ms = coalesce(qu.window_end_ms, now_ms + qu.rate_period_ms)
    WHERE name = q;
  END IF;
END $$;

-- Replaces a queue's limits (NULL: none); the window restarts; its workers hear of it.
CREATE OR REPLACE FUNCTION fastjobs.set_limits(q text, rmax bigint, period_ms bigint, conc bigint) RETURNS void
LANGUAGE sql AS $$
  UPDATE fastjobs.queues SET rate_max = rmax, rate_period_ms = period_ms, concurrency = conc, window_end_ms = NULL, window_used = 0
  WHERE name = q;
  SELECT pg_notify('fastjobs_control', q), pg_notify('fastjobs_wake', q);
$$;

-- ack of version 1; a settled job also wakes the queue's workers under a concurrency limit.
CREATE OR REPLACE FUNCTION fastjobs.ack(q text, tok text, kinds "char"[], ids text[], results bytea[], delays bigint[],
                                        recs bytea[], errors bytea[], result_ttl_ms bigint, mark_ttl_ms bigint)
RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
  now_us bigint := fastjobs.now_us();
  now_ms bigint := now_us / 1000;
  c bigint; r bigint; f bigint; x bigint; missing "char"[];
  refused bigint := 0;
  woke boolean; later boolean;
BEGIN
  WITH e AS (
    SELECT * FROM unnest(kinds, ids, results, delays, recs, errors) AS e(kind, id, result, delay_ms, rec, err)
  ), ended AS (
    DELETE FROM fastjobs.jobs j USING e
    WHERE j.queue = q AND j.id = e.id AND j.state = 'a' AND j.token = tok AND e.kind IN ('c', 'x')
    RETURNING e.kind, e.id, e.result
  ), kept AS (
    INSERT INTO fastjobs.results (queue, id, state, data, data_expires_ms, expires_ms)
    SELECT q, id, kind, result, now_ms + result_ttl_ms, now_ms + mark_ttl_ms FROM ended
    ON CONFLICT (queue, id) DO UPDATE SET state = excluded.state, data = excluded.data,
      data_expires_ms = excluded.data_expires_ms, expires_ms = excluded.expires_ms
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
  PERFORM fastjobs.tell_waiters(q, array_agg(id)) FROM unnest(kinds, ids) AS e(kind, id) WHERE kind <> 'r';
  -- Under a concurrency limit a settled job frees a slot: wake a worker for it.
  IF woke OR (c + r + f + x > 0 AND EXISTS (SELECT 1 FROM fastjobs.queues WHERE name = q AND concurrency IS NOT NULL)) THEN
    PERFORM pg_notify('fastjobs_wake', q);
  END IF;
  IF later THEN PERFORM pg_notify('fastjobs_sched', q); END IF;
  RETURN ARRAY[c, r, f, refused, x];
END $$;
