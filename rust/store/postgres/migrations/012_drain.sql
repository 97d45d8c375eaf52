-- fastjobs schema, version 12: the drain's and the bulk path's statements without work they
-- need not do (benches/RESULTS.md, "every store, and the PostgreSQL peers").
--   The events triggers of version 8 return at once while no queue has its stream on: they
--     joined their transition tables on every statement that wrote, leased or settled jobs
--     (~67 µs of the server's time per job drained) to find no queue to write for.
--   ack and release join their batch to the leased jobs by a hash: the planner takes a
--     token's leased jobs (found by jobs_leased) for one row and joined the batch to them by
--     a nested loop that scanned the whole batch per job, O(batch²) (343 jobs: 117,306 rows
--     compared, 36 ms). A hash join is O(batch) whatever the estimate.
--   reserve leases the jobs it picked by their row addresses, not by a join of the picked
--     rows, which was planned as a hash of every job of the queue.

-- The events triggers of version 8 (events_ended: of version 11), each first asking whether
-- any queue has its stream on.
CREATE OR REPLACE FUNCTION fastjobs.events_written() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM fastjobs.queues WHERE events_keep IS NOT NULL) THEN RETURN NULL; END IF;
  INSERT INTO fastjobs.events (queue, at_ms, kind, ids, names, due_us)
  SELECT n.queue, fastjobs.now_us() / 1000, CASE n.state WHEN 'w' THEN 'waiting' ELSE 'delayed' END,
         array_agg(n.id ORDER BY n.seq), array_agg(fastjobs.record_name(n.record) ORDER BY n.seq), array_agg(n.due_us ORDER BY n.seq)
  FROM new_rows n JOIN fastjobs.queues qu ON qu.name = n.queue AND qu.events_keep IS NOT NULL
  GROUP BY n.queue, n.state
  ORDER BY n.queue, n.state DESC;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION fastjobs.events_moved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM fastjobs.queues WHERE events_keep IS NOT NULL) THEN RETURN NULL; END IF;
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

CREATE OR REPLACE FUNCTION fastjobs.events_ended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM fastjobs.queues WHERE events_keep IS NOT NULL) THEN RETURN NULL; END IF;
  INSERT INTO fastjobs.events (queue, at_ms, kind, ids, data)
  SELECT n.queue, fastjobs.now_us() / 1000, CASE n.state WHEN 'c' THEN 'completed' ELSE 'cancelled' END,
         array_agg(n.id ORDER BY n.id), array_agg(n.data ORDER BY n.id)
  FROM new_rows n JOIN fastjobs.queues qu ON qu.name = n.queue AND qu.events_keep IS NOT NULL
  WHERE NOT (n.state = 'x' AND n.data_expires_ms = 0)
  GROUP BY n.queue, n.state;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION fastjobs.events_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM fastjobs.queues WHERE events_keep IS NOT NULL) THEN RETURN NULL; END IF;
  INSERT INTO fastjobs.events (queue, at_ms, kind, ids, names)
  SELECT o.queue, fastjobs.now_us() / 1000, 'removed', array_agg(o.id ORDER BY o.seq), array_agg(fastjobs.record_name(o.record) ORDER BY o.seq)
  FROM old_rows o JOIN fastjobs.queues qu ON qu.name = o.queue AND qu.events_keep IS NOT NULL
  WHERE NOT EXISTS (SELECT 1 FROM fastjobs.results r WHERE r.queue = o.queue AND r.id = o.id)
  GROUP BY o.queue;
  RETURN NULL;
END $$;

-- ack of version 7, its joins by hash.
CREATE OR REPLACE FUNCTION fastjobs.ack(q text, tok text, kinds "char"[], ids text[], results bytea[], delays bigint[],
                                        recs bytea[], errors bytea[], result_ttl_ms bigint, mark_ttl_ms bigint)
RETURNS bigint[] LANGUAGE plpgsql SET enable_nestloop = off AS $$
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

-- release of version 1, its join by hash.
CREATE OR REPLACE FUNCTION fastjobs.release(q text, tok text, ids text[], mark_ttl_ms bigint) RETURNS bigint
LANGUAGE plpgsql SET enable_nestloop = off AS $$
DECLARE
  back text[];
  asked text[];
  n bigint;
BEGIN
  SELECT array_agg(e.id ORDER BY e.ord) FILTER (WHERE NOT j.cancel_asked), array_agg(e.id) FILTER (WHERE j.cancel_asked)
  INTO back, asked
  FROM unnest(ids) WITH ORDINALITY AS e(id, ord)
  JOIN fastjobs.jobs j ON j.queue = q AND j.id = e.id AND j.state = 'a' AND j.token = tok;
  IF asked IS NOT NULL THEN PERFORM fastjobs.cancel_unstarted(q, asked, mark_ttl_ms); END IF;
  n := CASE WHEN back IS NULL THEN 0 ELSE fastjobs.to_head(q, back) END;
  IF NOT EXISTS (SELECT 1 FROM fastjobs.jobs WHERE queue = q AND state = 'a' AND token = tok) THEN
    DELETE FROM fastjobs.leases WHERE queue = q AND token = tok;
  END IF;
  RETURN n;
END $$;

-- reserve of version 9, leasing the picked jobs by their row addresses.
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
    -- The picked jobs leased by their row addresses (stable while this transaction holds
    -- their locks), an array the planner cannot size, so it is always read by addresses: a
    -- join of the picked rows to `jobs`, or a look-up of their ids, was planned as a scan of
    -- the queue's every row.
    WITH leased AS (
      UPDATE fastjobs.jobs j SET state = 'a', token = tok, started_ms = NULL, cancel_asked = false
      WHERE j.ctid = ANY(ARRAY(SELECT ctid FROM fastjobs.jobs WHERE queue = q AND state = 'w'
                               ORDER BY priority DESC, seq LIMIT want FOR UPDATE SKIP LOCKED))
        AND j.queue = q
      RETURNING j.record, j.priority, j.seq
    )
    SELECT array_agg(record ORDER BY priority DESC, seq) INTO recs FROM leased;
  END IF;
  IF recs IS NULL OR cardinality(recs) = 0 THEN recs := '{}'; RETURN; END IF;
  IF NOT (SELECT bool_and(fastjobs.lease_ok(r)) FROM unnest(recs) AS r) THEN
    -- Only job records are leased: anything else taken is failed as undecodable here.
    PERFORM fastjobs.fail_undecodable(q, tok);
    SELECT coalesce(array_agg(r ORDER BY i), '{}') INTO recs FROM unnest(recs) WITH ORDINALITY AS u(r, i) WHERE fastjobs.lease_ok(r);
    IF cardinality(recs) = 0 THEN RETURN; END IF;
  END IF;
  INSERT INTO fastjobs.leases VALUES (q, tok, now_ms + lease_ms)
  ON CONFLICT (queue, token) DO UPDATE SET deadline_ms = excluded.deadline_ms;
  IF qu.rate_max IS NOT NULL THEN
    -- The window opens with its first lease and lasts its period.
    UPDATE fastjobs.queues SET window_used = qu.window_used + cardinality(recs),
      window_end_ms = coalesce(qu.window_end_ms, now_ms + qu.rate_period_ms)
    WHERE name = q;
  END IF;
END $$;
