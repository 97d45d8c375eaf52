-- fastjobs schema, version 11: what the Python suite run on this store asked for.
--   tick: delayed jobs become ready in due order (their sequence numbers taken in that order).
--   cancel: a removed job's generated id reads cancelled afterwards, as on the other stores
--     (a caller-chosen id is free again).
--   enqueue_many: a batch with deduplication keys is written one job at a time, so that a
--     later job can be deduplicated (or debounced into) an earlier job of the same batch.

-- What a removed job leaves: its traces forgotten, and for a generated id (record.rs
-- is_generated_id: 10 letters or digits, '-', up to 8 digits) a cancelled mark kept
-- `mark_ttl_ms`, so its handle reads cancelled, not unknown. The mark has data_expires_ms 0:
-- the events stream says "removed" for it (events_removed), not "cancelled".
CREATE OR REPLACE FUNCTION fastjobs.forget_removed(q text, jid text, mark_ttl_ms bigint) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  PERFORM fastjobs.forget(q, jid);
  IF jid ~ '^[A-Za-z0-9]{10}-[0-9]{1,8}$' THEN
    INSERT INTO fastjobs.results VALUES (q, jid, 'x', NULL, 0, fastjobs.now_us() / 1000 + mark_ttl_ms);
  END IF;
END $$;

CREATE OR REPLACE FUNCTION fastjobs.events_ended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO fastjobs.events (queue, at_ms, kind, ids, data)
  SELECT n.queue, fastjobs.now_us() / 1000, CASE n.state WHEN 'c' THEN 'completed' ELSE 'cancelled' END,
         array_agg(n.id ORDER BY n.id), array_agg(n.data ORDER BY n.id)
  FROM new_rows n JOIN fastjobs.queues qu ON qu.name = n.queue AND qu.events_keep IS NOT NULL
  WHERE NOT (n.state = 'x' AND n.data_expires_ms = 0)
  GROUP BY n.queue, n.state;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION fastjobs.tick(q text, lim integer, mark_ttl_ms bigint) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
  now_us bigint := fastjobs.now_us();
  now_ms bigint := now_us / 1000;
  promoted bigint;
  reaped bigint := 0;
  failed bigint := 0;
  lease record;
  job record;
  att integer;
  back text[];
  asked text[];
  err bytea;
  w text;
BEGIN
  -- The sequence numbers are taken in due order (an UPDATE takes its rows in no set order).
  WITH due AS (
    SELECT id FROM fastjobs.jobs WHERE queue = q AND state = 'd' AND due_us <= now_us
    ORDER BY due_us, seq LIMIT lim FOR UPDATE SKIP LOCKED
  ), numbered AS (
    SELECT d.id, nextval('fastjobs.job_seq') AS s FROM (SELECT id, row_number() OVER () AS o FROM due) d ORDER BY d.o
  )
  UPDATE fastjobs.jobs j SET state = 'w', due_us = NULL, seq = numbered.s
  FROM numbered WHERE j.queue = q AND j.id = numbered.id;
  GET DIAGNOSTICS promoted = ROW_COUNT;
  IF promoted > 0 THEN PERFORM pg_notify('fastjobs_wake', q); END IF;

  FOR lease IN
    SELECT token FROM fastjobs.leases WHERE queue = q AND deadline_ms <= now_ms
    ORDER BY deadline_ms LIMIT lim FOR UPDATE SKIP LOCKED
  LOOP
    back := '{}';
    asked := '{}';
    w := split_part(lease.token, '.', 1);
    FOR job IN
      SELECT id, record, started_ms, cancel_asked, error FROM fastjobs.jobs
      WHERE queue = q AND state = 'a' AND token = lease.token ORDER BY seq FOR UPDATE
    LOOP
      att := get_byte(job.record, 1) * 256 + get_byte(job.record, 2);
      IF job.cancel_asked THEN
        asked := asked || job.id;
        CONTINUE;
      END IF;
      reaped := reaped + 1;
      IF job.started_ms IS NOT NULL THEN att := att + 1; END IF;
      IF job.started_ms IS NOT NULL AND att >= get_byte(job.record, 3) * 256 + get_byte(job.record, 4) THEN
        err := convert_to(json_strip_nulls(json_build_object(
          'type', 'LeaseExpired',
          'message', 'worker ' || w || ' stopped renewing its lease while it ran this job (it died or hung); '
                     || 'its attempts are used up (' || att || ' of ' || (get_byte(job.record, 3) * 256 + get_byte(job.record, 4)) || ' counted)',
          'traceback', '', 'worker', w, 'started_at_ms', job.started_ms,
          'previous', CASE WHEN job.error IS NOT NULL THEN fastjobs.json_or_null(job.error) END))::text, 'UTF8');
        UPDATE fastjobs.jobs SET state = 'f', token = NULL, record = fastjobs.with_attempt(job.record, att, 1),
          error = err, failed_ms = now_ms
        WHERE queue = q AND id = job.id;
        failed := failed + 1;
        PERFORM fastjobs.tell_waiters(q, ARRAY[job.id]);
      ELSE
        UPDATE fastjobs.jobs SET record = fastjobs.with_attempt(job.record, att, 2) WHERE queue = q AND id = job.id;
        back := back || job.id;
      END IF;
    END LOOP;
    IF cardinality(asked) > 0 THEN PERFORM fastjobs.cancel_unstarted(q, asked, mark_ttl_ms); END IF;
    IF cardinality(back) > 0 THEN PERFORM fastjobs.to_head(q, back); END IF;
    DELETE FROM fastjobs.leases WHERE queue = q AND token = lease.token;
    INSERT INTO fastjobs.reaped VALUES (q, lease.token, now_ms) ON CONFLICT DO NOTHING;
  END LOOP;
  IF reaped > 0 THEN UPDATE fastjobs.queues SET stalled = stalled + reaped WHERE name = q; END IF;
  -- Housekeeping, a page at a time: ended jobs' rows and reaped tokens past their time.
  DELETE FROM fastjobs.results WHERE queue = q AND id IN (
    SELECT id FROM fastjobs.results WHERE queue = q AND expires_ms < now_ms ORDER BY expires_ms LIMIT lim);
  DELETE FROM fastjobs.reaped WHERE queue = q AND at_ms < now_ms - 604800000;
  RETURN ARRAY[promoted, reaped,
    coalesce((SELECT min(due_us) FROM fastjobs.jobs WHERE queue = q AND state = 'd'), -1),
    coalesce((SELECT min(deadline_ms) FROM fastjobs.leases WHERE queue = q), -1),
    now_ms, now_us];
END $$;

CREATE OR REPLACE FUNCTION fastjobs.cancel(q text, jid text, remove boolean, mark_ttl_ms bigint,
                                           OUT state text, OUT record bytea, OUT done boolean)
LANGUAGE plpgsql AS $$
DECLARE
  s "char";
BEGIN
  SELECT j.state, j.record INTO s, record FROM fastjobs.jobs j WHERE j.queue = q AND j.id = jid FOR UPDATE;
  IF FOUND THEN
    state := CASE s WHEN 'w' THEN 'waiting' WHEN 'd' THEN 'delayed' WHEN 'a' THEN 'active' ELSE 'failed' END;
    IF s = 'a' THEN
      done := NOT remove;
      IF done THEN
        UPDATE fastjobs.jobs j SET cancel_asked = true WHERE j.queue = q AND j.id = jid;
        PERFORM pg_notify('fastjobs_control', q);
      END IF;
      RETURN;
    END IF;
    IF s = 'f' AND NOT remove THEN done := false; RETURN; END IF;
    done := true;
    IF remove THEN
      DELETE FROM fastjobs.jobs j WHERE j.queue = q AND j.id = jid;
      PERFORM fastjobs.forget_removed(q, jid, mark_ttl_ms);
      PERFORM fastjobs.tell_waiters(q, ARRAY[jid]);
    ELSE
      PERFORM fastjobs.cancel_unstarted(q, ARRAY[jid], mark_ttl_ms);
    END IF;
    RETURN;
  END IF;
  SELECT s2.state INTO state FROM fastjobs.status(q, jid) s2;
  done := remove AND state <> 'unknown';
  IF done THEN PERFORM fastjobs.forget_removed(q, jid, mark_ttl_ms); END IF;
END $$;

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
  IF dkeys IS NOT NULL AND cardinality(ids) > 1 THEN
    -- One job at a time: a later job of the batch may be deduplicated by an earlier one
    -- (debounced: it replaces that job's record), whose row must be written by then.
    out := '{}';
    FOR i IN 1 .. cardinality(ids) LOOP
      out := out || fastjobs.enqueue_many(q, ARRAY[ids[i]], ARRAY[recs[i]], ARRAY[customs[i]], ARRAY[delays[i]], ARRAY[ats[i]],
                                          NULL, NULL, ARRAY[dkeys[i]], ARRAY[dmodes[i]], ttl_ms,
                                          CASE WHEN grps IS NOT NULL THEN ARRAY[grps[i]] END);
    END LOOP;
    RETURN out;
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
