-- fastjobs schema, version 7: groups (docs/DESIGN.md "Groups"). A job dispatched with a
-- group waits among the queue's ready jobs with its group (`grp`); a reserve of a queue that
-- has grouped jobs ready serves the groups in turns, the ungrouped jobs being one more member,
-- each group under the limits every group has (`g_rate_max` per `g_rate_period_ms`, a window
-- per group in `gwindows`; `g_concurrency` leased at once).
ALTER TABLE fastjobs.jobs ADD COLUMN IF NOT EXISTS grp text;
CREATE INDEX IF NOT EXISTS jobs_grouped ON fastjobs.jobs (queue, grp, priority DESC, seq) WHERE state = 'w' AND grp IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_group_leased ON fastjobs.jobs (queue, grp) WHERE state = 'a' AND grp IS NOT NULL;
ALTER TABLE fastjobs.queues ADD COLUMN IF NOT EXISTS g_rate_max bigint;
ALTER TABLE fastjobs.queues ADD COLUMN IF NOT EXISTS g_rate_period_ms bigint;
ALTER TABLE fastjobs.queues ADD COLUMN IF NOT EXISTS g_concurrency bigint;
CREATE TABLE IF NOT EXISTS fastjobs.gwindows (
  queue text NOT NULL,
  grp text NOT NULL,
  window_end_ms bigint NOT NULL,
  used bigint NOT NULL,
  PRIMARY KEY (queue, grp)
);
-- When each member of a queue (a group, '' for the ungrouped jobs) was last served: a reserve
-- starts with the members served least recently, so turns carry over from one to the next.
CREATE SEQUENCE IF NOT EXISTS fastjobs.turn_seq;
CREATE TABLE IF NOT EXISTS fastjobs.gturns (
  queue text NOT NULL,
  grp text NOT NULL,
  turn bigint NOT NULL,
  PRIMARY KEY (queue, grp)
);

-- Replaces the limits every group of queue `q` has (NULL: none); its workers hear of it.
CREATE OR REPLACE FUNCTION fastjobs.set_group_limits(q text, rmax bigint, period_ms bigint, conc bigint) RETURNS void
LANGUAGE sql AS $$
  UPDATE fastjobs.queues SET g_rate_max = rmax, g_rate_period_ms = period_ms, g_concurrency = conc WHERE name = q;
  DELETE FROM fastjobs.gwindows WHERE queue = q;
  SELECT pg_notify('fastjobs_control', q), pg_notify('fastjobs_wake', q);
$$;

-- Leases up to `want` ready jobs of `q` (which has grouped jobs ready) under `tok`, the
-- groups in turns: the first job of each member, then the second of each, ...; a group gets
-- no more than its limits allow now. The members served least recently come first (`gturns`;
-- never served: first, the ungrouped before groups by name). `wait_ms` when
-- nothing could be leased because every group with jobs is at its limits and nothing
-- ungrouped is ready: ms until the earliest group window ends, or -1 (concurrency).
-- Grouped reserves of a queue take turns (a lock of its row), so counts hold.
CREATE OR REPLACE FUNCTION fastjobs.reserve_groups(q text, tok text, want integer, OUT recs bytea[], OUT wait_ms bigint)
LANGUAGE plpgsql AS $$
DECLARE
  now_ms bigint := fastjobs.now_us() / 1000;
  qu fastjobs.queues;
BEGIN
  SELECT * INTO qu FROM fastjobs.queues WHERE name = q FOR UPDATE;
  DELETE FROM fastjobs.gwindows WHERE queue = q AND window_end_ms <= now_ms;
  WITH members AS (
    SELECT DISTINCT grp FROM fastjobs.jobs WHERE queue = q AND state = 'w' AND grp IS NOT NULL
  ), allowance AS (
    SELECT m.grp,
           least(coalesce(qu.g_concurrency - (SELECT count(*) FROM fastjobs.jobs a WHERE a.queue = q AND a.state = 'a' AND a.grp = m.grp), want),
                 coalesce(qu.g_rate_max - coalesce((SELECT w.used FROM fastjobs.gwindows w WHERE w.queue = q AND w.grp = m.grp), 0), want)) AS n
    FROM members m
  ), candidates AS (
    SELECT c.id, c.grp, c.priority, c.seq, c.rn, coalesce(t.turn, 0) AS turn FROM (
      SELECT j.id, j.grp, j.priority, j.seq, row_number() OVER (PARTITION BY j.grp ORDER BY j.priority DESC, j.seq) AS rn
      FROM fastjobs.jobs j WHERE j.queue = q AND j.state = 'w'
    ) c LEFT JOIN allowance a ON a.grp = c.grp
    LEFT JOIN fastjobs.gturns t ON t.queue = q AND t.grp = coalesce(c.grp, '')
    WHERE c.rn <= want AND (c.grp IS NULL OR c.rn <= a.n)
    ORDER BY c.rn, turn, c.grp NULLS FIRST LIMIT want
  ), picked AS (
    SELECT j.id FROM fastjobs.jobs j JOIN candidates c ON j.queue = q AND j.id = c.id FOR UPDATE OF j SKIP LOCKED
  ), leased AS (
    UPDATE fastjobs.jobs j SET state = 'a', token = tok, started_ms = NULL, cancel_asked = false
    FROM picked WHERE j.queue = q AND j.id = picked.id
    RETURNING j.id, j.record, j.grp
  )
  , served AS (
    INSERT INTO fastjobs.gturns (queue, grp, turn)
    SELECT q, m.member, nextval('fastjobs.turn_seq') FROM (
      SELECT coalesce(c.grp, '') AS member, min(c.rn) AS rn, min(c.turn) AS turn FROM leased l JOIN candidates c ON c.id = l.id
      GROUP BY coalesce(c.grp, '') ORDER BY min(c.rn), min(c.turn), coalesce(c.grp, '')
    ) m
    ON CONFLICT (queue, grp) DO UPDATE SET turn = excluded.turn
  )
  SELECT array_agg(l.record ORDER BY c.rn, c.turn, c.grp NULLS FIRST) INTO recs
  FROM leased l JOIN candidates c ON c.id = l.id;
  IF recs IS NULL THEN
    recs := '{}';
    IF NOT EXISTS (SELECT 1 FROM fastjobs.jobs WHERE queue = q AND state = 'w' AND grp IS NULL) THEN
      -- Every group is at its limits: come back when the earliest window ends, or when a
      -- settled job frees a slot.
      wait_ms := coalesce((SELECT min(window_end_ms) - now_ms FROM fastjobs.gwindows WHERE queue = q
                           AND qu.g_rate_max IS NOT NULL AND used >= qu.g_rate_max), -1);
    END IF;
    RETURN;
  END IF;
  IF qu.g_rate_max IS NOT NULL THEN
    INSERT INTO fastjobs.gwindows (queue, grp, window_end_ms, used)
    SELECT q, j.grp, now_ms + qu.g_rate_period_ms, count(*) FROM fastjobs.jobs j
    WHERE j.queue = q AND j.state = 'a' AND j.token = tok AND j.grp IS NOT NULL GROUP BY j.grp
    ON CONFLICT (queue, grp) DO UPDATE SET used = fastjobs.gwindows.used + excluded.used;
  END IF;
END $$;

-- enqueue_many of version 4, with each job's group (`grps`, NULL for none).
DROP FUNCTION IF EXISTS fastjobs.enqueue(text, text, bytea, boolean, bigint, bigint);
DROP FUNCTION IF EXISTS fastjobs.enqueue_many(text, text[], bytea[], boolean[], bigint[], bigint[], text, bigint, text[], text[], bigint);
CREATE OR REPLACE FUNCTION fastjobs.enqueue_many(q text, ids text[], recs bytea[], customs boolean[], delays bigint[], ats bigint[],
                                                 producer text DEFAULT NULL, guard bigint DEFAULT NULL,
                                                 dkeys text[] DEFAULT NULL, dmodes text[] DEFAULT NULL, ttl_ms bigint DEFAULT 2592000000,
                                                 grps text[] DEFAULT NULL)
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
           CASE WHEN dkeys IS NOT NULL AND dmodes[e.ord] = 'u' THEN dkeys[e.ord] END AS until_settled,
           CASE WHEN grps IS NOT NULL THEN grps[e.ord] END AS grp
    FROM unnest(ids, recs, customs, delays, ats) WITH ORDINALITY AS e(id, rec, custom, delay_us, at_us, ord)
  ), fresh AS (
    SELECT e.* FROM e
    WHERE e.holder IS NULL
      AND NOT (e.custom AND EXISTS (SELECT 1 FROM fastjobs.results r WHERE r.queue = q AND r.id = e.id AND r.expires_ms > now_us / 1000))
    ORDER BY ord
  ), ins AS (
    INSERT INTO fastjobs.jobs (queue, id, state, priority, seq, due_us, custom, record, dedup_key, grp)
    SELECT q, f.id, CASE WHEN f.due_us > now_us THEN 'd' ELSE 'w' END, fastjobs.record_priority(f.rec),
           nextval('fastjobs.job_seq'), CASE WHEN f.due_us > now_us THEN f.due_us END, f.custom, f.rec, f.until_settled, f.grp
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
                                            at_us bigint DEFAULT NULL, grp text DEFAULT NULL)
RETURNS boolean LANGUAGE sql AS $$
  SELECT (fastjobs.enqueue_many(q, ARRAY[id], ARRAY[rec], ARRAY[custom], ARRAY[delay_us], ARRAY[at_us], grps => ARRAY[grp]))[1] = 'n'
$$;

-- reserve of version 4, serving the groups in turns when grouped jobs are ready.
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
  IF EXISTS (SELECT 1 FROM fastjobs.jobs WHERE queue = q AND state = 'w' AND grp IS NOT NULL) THEN
    SELECT g.recs, g.wait_ms INTO recs, wait_ms FROM fastjobs.reserve_groups(q, tok, want) g;
    IF wait_ms IS NOT NULL THEN RETURN; END IF;
  ELSE
    WITH picked AS (
      SELECT id FROM fastjobs.jobs WHERE queue = q AND state = 'w'
      ORDER BY priority DESC, seq LIMIT want FOR UPDATE SKIP LOCKED
    ), leased AS (
      UPDATE fastjobs.jobs j SET state = 'a', token = tok, started_ms = NULL, cancel_asked = false
      FROM picked WHERE j.queue = q AND j.id = picked.id
      RETURNING j.record, j.priority, j.seq
    )
    SELECT array_agg(record ORDER BY priority DESC, seq) INTO recs FROM leased;
  END IF;
  IF recs IS NULL OR cardinality(recs) = 0 THEN recs := '{}'; RETURN; END IF;
  INSERT INTO fastjobs.leases VALUES (q, tok, now_ms + lease_ms)
  ON CONFLICT (queue, token) DO UPDATE SET deadline_ms = excluded.deadline_ms;
  IF qu.rate_max IS NOT NULL THEN
    -- The window opens with its first lease and lasts its period.
    UPDATE fastjobs.queues SET window_used = qu.window_used + cardinality(recs),
      window_end_ms = coalesce(qu.window_end_ms, now_ms + qu.rate_period_ms)
    WHERE name = q;
  END IF;
END $$;

-- ack of version 4; a settled job also wakes the queue's workers under per-group concurrency.
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
  IF woke OR (c + r + f + x > 0 AND EXISTS (SELECT 1 FROM fastjobs.queues WHERE name = q AND (concurrency IS NOT NULL OR g_concurrency IS NOT NULL))) THEN
    PERFORM pg_notify('fastjobs_wake', q);
  END IF;
  IF later THEN PERFORM pg_notify('fastjobs_sched', q); END IF;
  RETURN ARRAY[c, r, f, refused, x];
END $$;

-- obliterate of version 1, with the rows of version 4 and 7 (deduplication keys, groups).
CREATE OR REPLACE FUNCTION fastjobs.obliterate(q text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  total bigint := 0;
  n bigint;
  t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['jobs', 'leases', 'reaped', 'results', 'waiters', 'chunks', 'progress', 'logs', 'callbacks',
                           'dedup', 'gwindows', 'gturns'] LOOP
    EXECUTE format('DELETE FROM fastjobs.%I WHERE queue = $1', t) USING q;
    GET DIAGNOSTICS n = ROW_COUNT;
    total := total + n;
  END LOOP;
  DELETE FROM fastjobs.queues WHERE name = q;
  RETURN total;
END $$;
