-- fastjobs schema, version 1: the job lifecycle, the queue registry, results, workflows'
-- bookkeeping, the worker registry, progress, logs and callback records. Every statement
-- is one store operation's atomic step, as the Lua scripts are for Redis (rust/lua/).
-- Times are the server's clock: ms (`_ms`) or µs (`_us`) since the epoch.

CREATE OR REPLACE FUNCTION fastjobs.now_us() RETURNS bigint LANGUAGE sql VOLATILE AS
$$ SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint $$;

-- The queue registry, one row per queue: its controls and its counters.
CREATE TABLE IF NOT EXISTS fastjobs.queues (
  name text PRIMARY KEY,
  paused boolean NOT NULL DEFAULT false,
  completed bigint NOT NULL DEFAULT 0,
  retried bigint NOT NULL DEFAULT 0,
  stalled bigint NOT NULL DEFAULT 0,
  cancelled bigint NOT NULL DEFAULT 0
);

-- Ready jobs take `seq` from job_seq at the tail; a hand-back goes to the head with a negative
-- one from head_seq (release, the reaper): later hand-backs before earlier ones, as LPUSH.
CREATE SEQUENCE IF NOT EXISTS fastjobs.job_seq;
CREATE SEQUENCE IF NOT EXISTS fastjobs.head_seq;

-- Every job the store holds: state 'w' waiting (ready), 'd' delayed (due at due_us), 'a'
-- leased under `token`, 'f' failed for good. `record` is the packed record (record.rs), whose
-- header holds the attempt, max attempts and priority.
CREATE TABLE IF NOT EXISTS fastjobs.jobs (
  queue text NOT NULL,
  id text NOT NULL,
  state "char" NOT NULL,
  priority smallint NOT NULL DEFAULT 0,
  seq bigint NOT NULL DEFAULT 0,
  due_us bigint,
  token text,
  -- An orphan's run started (start): the reaper counts it.
  started_ms bigint,
  -- Somebody asked to cancel it while it was leased (cancel).
  cancel_asked boolean NOT NULL DEFAULT false,
  custom boolean NOT NULL DEFAULT false,
  error bytea,
  failed_ms bigint,
  record bytea NOT NULL,
  PRIMARY KEY (queue, id)
);
CREATE INDEX IF NOT EXISTS jobs_ready ON fastjobs.jobs (queue, priority DESC, seq) WHERE state = 'w';
CREATE INDEX IF NOT EXISTS jobs_due ON fastjobs.jobs (queue, due_us) WHERE state = 'd';
CREATE INDEX IF NOT EXISTS jobs_leased ON fastjobs.jobs (queue, token) WHERE state = 'a';
CREATE INDEX IF NOT EXISTS jobs_failed ON fastjobs.jobs (queue, failed_ms) WHERE state = 'f';

-- Live leases and their deadlines (extend pushes them on; tick reaps those past it).
CREATE TABLE IF NOT EXISTS fastjobs.leases (
  queue text NOT NULL,
  token text NOT NULL,
  deadline_ms bigint NOT NULL,
  PRIMARY KEY (queue, token)
);
CREATE INDEX IF NOT EXISTS leases_deadline ON fastjobs.leases (queue, deadline_ms);

-- Tokens the reaper took jobs from, for a week: a late acknowledgement under one is refused
-- as stale, not taken for a resend whose first answer was lost.
CREATE TABLE IF NOT EXISTS fastjobs.reaped (
  queue text NOT NULL,
  token text NOT NULL,
  at_ms bigint NOT NULL,
  PRIMARY KEY (queue, token)
);

-- Jobs that ended: 'c' completed (data: the result JSON, kept until data_expires_ms), 'x'
-- cancelled. The row outlives the result (expires_ms) so a caller-chosen id is not taken again.
CREATE TABLE IF NOT EXISTS fastjobs.results (
  queue text NOT NULL,
  id text NOT NULL,
  state "char" NOT NULL,
  data bytea,
  data_expires_ms bigint NOT NULL,
  expires_ms bigint NOT NULL,
  PRIMARY KEY (queue, id)
);
CREATE INDEX IF NOT EXISTS results_expiry ON fastjobs.results (queue, expires_ms);

-- Callers waiting for a job's outcome (wait_result): a settlement of a job with a row here
-- deletes it and notifies `fastjobs_results` with `<queue>\n<id>`.
CREATE TABLE IF NOT EXISTS fastjobs.waiters (
  queue text NOT NULL,
  id text NOT NULL,
  n integer NOT NULL DEFAULT 1,
  PRIMARY KEY (queue, id)
);

-- Guarded bulk chunks written (producer, first sequence number), written with their jobs.
CREATE TABLE IF NOT EXISTS fastjobs.chunks (
  queue text NOT NULL,
  producer text NOT NULL,
  first_seq bigint NOT NULL,
  at_ms bigint NOT NULL,
  PRIMARY KEY (queue, producer, first_seq)
);

-- A running job's last progress and log lines (JSON with "at" first), until expires_ms.
CREATE TABLE IF NOT EXISTS fastjobs.progress (
  queue text NOT NULL,
  id text NOT NULL,
  entry bytea NOT NULL,
  expires_ms bigint NOT NULL,
  PRIMARY KEY (queue, id)
);
CREATE SEQUENCE IF NOT EXISTS fastjobs.log_seq;
CREATE TABLE IF NOT EXISTS fastjobs.logs (
  queue text NOT NULL,
  id text NOT NULL,
  seq bigint NOT NULL DEFAULT nextval('fastjobs.log_seq'),
  entry bytea NOT NULL,
  expires_ms bigint NOT NULL,
  PRIMARY KEY (queue, id, seq)
);

-- How a job's callback went: its fields, replaced one by one.
CREATE TABLE IF NOT EXISTS fastjobs.callbacks (
  queue text NOT NULL,
  id text NOT NULL,
  field text NOT NULL,
  value bytea NOT NULL,
  expires_ms bigint NOT NULL,
  PRIMARY KEY (queue, id, field)
);

-- Workflows' bookkeeping records ("chain:<id>", "flow:<id>"): fields, and an expiry for the
-- whole record; a flow node's children's results (flow_settle, flow_results).
CREATE TABLE IF NOT EXISTS fastjobs.books (
  book text PRIMARY KEY,
  expires_ms bigint
);
CREATE TABLE IF NOT EXISTS fastjobs.book_fields (
  book text NOT NULL REFERENCES fastjobs.books ON DELETE CASCADE,
  field text NOT NULL,
  value bytea NOT NULL,
  PRIMARY KEY (book, field)
);
CREATE TABLE IF NOT EXISTS fastjobs.flow_results (
  flow text NOT NULL,
  node bigint NOT NULL,
  job_id text NOT NULL,
  data bytea NOT NULL,
  PRIMARY KEY (flow, node, job_id)
);

-- The worker registry: each worker's entry (JSON).
CREATE TABLE IF NOT EXISTS fastjobs.workers (
  worker text PRIMARY KEY,
  entry bytea NOT NULL
);

-- A record with its attempt counter set and, when `kind` is given, its first byte (1 a job
-- record, 2 the same job orphaned).
CREATE OR REPLACE FUNCTION fastjobs.with_attempt(rec bytea, n integer, kind integer DEFAULT NULL) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
  SELECT set_byte(set_byte(set_byte(rec, 0, coalesce(kind, get_byte(rec, 0))), 1, (n >> 8) & 255), 2, n & 255)
$$;

-- The priority a record's header holds (0 to 9).
CREATE OR REPLACE FUNCTION fastjobs.record_priority(rec bytea) RETURNS smallint
LANGUAGE sql IMMUTABLE AS $$ SELECT CASE WHEN length(rec) > 5 THEN least(get_byte(rec, 5), 9)::smallint ELSE 0::smallint END $$;

-- Tells waiters of the jobs `ids` that their outcome is there.
CREATE OR REPLACE FUNCTION fastjobs.tell_waiters(q text, ids text[]) RETURNS void LANGUAGE sql AS $$
  WITH w AS (DELETE FROM fastjobs.waiters WHERE queue = q AND id = ANY(ids) RETURNING id)
  SELECT pg_notify('fastjobs_results', q || E'\n' || w.id) FROM w
$$;

-- Writes jobs of queue `q`: per job its id, record, whether the caller chose the id, and its
-- due time (µs since the epoch; NULL or a past time: ready now). A guarded chunk (producer,
-- guard) that was written already writes nothing and answers NULL. Otherwise answers, per
-- job, true (written) or false (a job with that caller-chosen id exists, or ended within the
-- marks' time). A job's due time is its `at` (µs since the epoch, the producer's clock) or
-- the server's now plus its delay (µs). Ready jobs wake the queue's workers, delayed ones its schedulers, on commit.
CREATE OR REPLACE FUNCTION fastjobs.enqueue_many(q text, ids text[], recs bytea[], customs boolean[], delays bigint[], ats bigint[],
                                                 producer text DEFAULT NULL, guard bigint DEFAULT NULL)
RETURNS boolean[] LANGUAGE plpgsql AS $$
DECLARE
  now_us bigint := fastjobs.now_us();
  out boolean[];
  ready boolean;
  delayed boolean;
BEGIN
  IF guard IS NOT NULL THEN
    INSERT INTO fastjobs.chunks VALUES (q, producer, guard, now_us / 1000) ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN RETURN NULL; END IF;
  END IF;
  INSERT INTO fastjobs.queues (name) VALUES (q) ON CONFLICT DO NOTHING;
  WITH e AS (
    SELECT e.id, e.rec, e.custom, coalesce(e.at_us, now_us + e.delay_us) AS due_us, e.ord
    FROM unnest(ids, recs, customs, delays, ats) WITH ORDINALITY AS e(id, rec, custom, delay_us, at_us, ord)
  ), fresh AS (
    SELECT e.* FROM e
    WHERE NOT (e.custom AND EXISTS (SELECT 1 FROM fastjobs.results r WHERE r.queue = q AND r.id = e.id AND r.expires_ms > now_us / 1000))
    ORDER BY ord
  ), ins AS (
    INSERT INTO fastjobs.jobs (queue, id, state, priority, seq, due_us, custom, record)
    SELECT q, f.id, CASE WHEN f.due_us > now_us THEN 'd' ELSE 'w' END, fastjobs.record_priority(f.rec),
           nextval('fastjobs.job_seq'), CASE WHEN f.due_us > now_us THEN f.due_us END, f.custom, f.rec
    FROM fresh f ORDER BY f.ord
    ON CONFLICT DO NOTHING
    RETURNING id, state
  )
  SELECT array_agg(ins.id IS NOT NULL ORDER BY e.ord), bool_or(ins.state = 'w'), bool_or(ins.state = 'd')
  INTO out, ready, delayed
  FROM e LEFT JOIN ins ON ins.id = e.id;
  IF ready THEN PERFORM pg_notify('fastjobs_wake', q); END IF;
  IF delayed THEN PERFORM pg_notify('fastjobs_sched', q); END IF;
  RETURN coalesce(out, '{}');
END $$;

-- One job, for a caller's own transaction too: written (true) or refused as a duplicate of a
-- caller-chosen id (false). Its wake-up is delivered when that transaction commits.
CREATE OR REPLACE FUNCTION fastjobs.enqueue(q text, id text, rec bytea, custom boolean DEFAULT true, delay_us bigint DEFAULT 0,
                                            at_us bigint DEFAULT NULL)
RETURNS boolean LANGUAGE sql AS $$
  SELECT (fastjobs.enqueue_many(q, ARRAY[id], ARRAY[rec], ARRAY[custom], ARRAY[delay_us], ARRAY[at_us]))[1]
$$;

-- Leases up to `n` ready jobs of `q` under `tok` until now + lease_ms: their records in queue
-- order (higher priority first). NULL when the queue is paused.
CREATE OR REPLACE FUNCTION fastjobs.reserve(q text, tok text, n integer, lease_ms bigint)
RETURNS bytea[] LANGUAGE plpgsql AS $$
DECLARE
  now_ms bigint := fastjobs.now_us() / 1000;
  out bytea[];
BEGIN
  IF (SELECT paused FROM fastjobs.queues WHERE name = q) THEN RETURN NULL; END IF;
  WITH picked AS (
    SELECT id FROM fastjobs.jobs WHERE queue = q AND state = 'w'
    ORDER BY priority DESC, seq LIMIT n FOR UPDATE SKIP LOCKED
  ), leased AS (
    UPDATE fastjobs.jobs j SET state = 'a', token = tok, started_ms = NULL, cancel_asked = false
    FROM picked WHERE j.queue = q AND j.id = picked.id
    RETURNING j.record, j.priority, j.seq
  )
  SELECT array_agg(record ORDER BY priority DESC, seq) INTO out FROM leased;
  IF out IS NULL THEN RETURN '{}'; END IF;
  INSERT INTO fastjobs.leases VALUES (q, tok, now_ms + lease_ms)
  ON CONFLICT (queue, token) DO UPDATE SET deadline_ms = excluded.deadline_ms;
  RETURN out;
END $$;

-- Settles jobs of lease `tok`: per job its kind ('c' completed, 'r' retry, 'f' failed, 'x'
-- cancelled), id, and: the result JSON (c), the delay ms (r), the record with its attempt
-- counted (r, f), the error JSON (r, f). A job the lease no longer holds is refused when the
-- reaper took it (a stale token), else it was settled by an earlier send of this
-- acknowledgement and is counted as what it was. Returns {completed, retried, failed,
-- refused, cancelled}.
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
  IF woke THEN PERFORM pg_notify('fastjobs_wake', q); END IF;
  IF later THEN PERFORM pg_notify('fastjobs_sched', q); END IF;
  RETURN ARRAY[c, r, f, refused, x];
END $$;

-- Puts jobs back at the head of their queue, in the order given (`ids`), as the kind given
-- (the reaper's orphans keep their place the same way).
CREATE OR REPLACE FUNCTION fastjobs.to_head(q text, ids text[]) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  base bigint := -nextval('fastjobs.head_seq') * 1000000;
  n bigint;
BEGIN
  UPDATE fastjobs.jobs j SET state = 'w', token = NULL, started_ms = NULL, due_us = NULL, seq = base + e.ord
  FROM unnest(ids) WITH ORDINALITY AS e(id, ord) WHERE j.queue = q AND j.id = e.id;
  GET DIAGNOSTICS n = ROW_COUNT;
  IF n > 0 THEN PERFORM pg_notify('fastjobs_wake', q); END IF;
  RETURN n;
END $$;

-- Ends a job that never ran as cancelled (somebody asked): a result row, its waiters told.
CREATE OR REPLACE FUNCTION fastjobs.cancel_unstarted(q text, ids text[], mark_ttl_ms bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
  now_ms bigint := fastjobs.now_us() / 1000;
  n bigint;
BEGIN
  WITH gone AS (DELETE FROM fastjobs.jobs WHERE queue = q AND id = ANY(ids) RETURNING id)
  INSERT INTO fastjobs.results (queue, id, state, data, data_expires_ms, expires_ms)
  SELECT q, id, 'x', NULL, now_ms, now_ms + mark_ttl_ms FROM gone
  ON CONFLICT (queue, id) DO UPDATE SET state = 'x', data = NULL, expires_ms = excluded.expires_ms;
  GET DIAGNOSTICS n = ROW_COUNT;
  IF n > 0 THEN
    UPDATE fastjobs.queues SET cancelled = cancelled + n WHERE name = q;
    PERFORM fastjobs.tell_waiters(q, ids);
  END IF;
  RETURN n;
END $$;

-- Hands leased jobs that never started back to the head of the queue, in order; one somebody
-- asked to cancel is cancelled instead. Returns how many went back.
CREATE OR REPLACE FUNCTION fastjobs.release(q text, tok text, ids text[], mark_ttl_ms bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
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

-- The scheduler's step for one queue: promotes up to `lim` due delayed jobs in due order and
-- reaps up to `lim` expired leases. A reaped job whose run was recorded (start) counts that
-- attempt and fails (LeaseExpired) once its attempts are used up; the others go back to the
-- head as orphans. Returns {promoted, reaped, next due µs or -1, next lease deadline ms or
-- -1, now ms, now µs}.
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
  WITH due AS (
    SELECT id FROM fastjobs.jobs WHERE queue = q AND state = 'd' AND due_us <= now_us
    ORDER BY due_us LIMIT lim FOR UPDATE SKIP LOCKED
  )
  UPDATE fastjobs.jobs j SET state = 'w', due_us = NULL, seq = nextval('fastjobs.job_seq')
  FROM due WHERE j.queue = q AND j.id = due.id;
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

-- JSON bytes as json, or NULL when they are not JSON.
CREATE OR REPLACE FUNCTION fastjobs.json_or_null(b bytea) RETURNS json LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  RETURN convert_from(b, 'UTF8')::json;
EXCEPTION WHEN others THEN
  RETURN NULL;
END $$;

-- Where job `id` is now: {state, record, data} (data: the result or the error JSON).
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
  state := CASE s WHEN 'c' THEN 'completed' WHEN 'x' THEN 'cancelled' ELSE 'unknown' END;
END $$;

-- `status`, and a waiter registered when the job has not ended: the job's row is locked
-- first, so a settlement running now finishes before (the answer is final) or sees the
-- waiter (and notifies it). A reserve meanwhile passes over the job (SKIP LOCKED): it is
-- leased by the next one.
CREATE OR REPLACE FUNCTION fastjobs.wait(q text, jid text, OUT state text, OUT record bytea, OUT data bytea)
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM 1 FROM fastjobs.jobs j WHERE j.queue = q AND j.id = jid AND j.state <> 'f' FOR SHARE;
  IF FOUND THEN
    INSERT INTO fastjobs.waiters AS w VALUES (q, jid, 1) ON CONFLICT (queue, id) DO UPDATE SET n = w.n + 1;
  END IF;
  SELECT s.state, s.record, s.data INTO state, record, data FROM fastjobs.status(q, jid) s;
END $$;

-- One waiter fewer (its wait timed out).
CREATE OR REPLACE FUNCTION fastjobs.unwait(q text, jid text) RETURNS void LANGUAGE sql AS $$
  WITH w AS (UPDATE fastjobs.waiters SET n = n - 1 WHERE queue = q AND id = jid RETURNING n)
  DELETE FROM fastjobs.waiters WHERE queue = q AND id = jid AND (SELECT n FROM w) <= 0
$$;

-- Cancels job `jid` (a waiting or delayed one ends cancelled; a leased one's worker is asked
-- to stop it) or removes it (every trace of a job that is not leased: a caller-chosen id is
-- free again). Returns the state it was in, its record, and whether it was done.
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
      PERFORM fastjobs.forget(q, jid);
      PERFORM fastjobs.tell_waiters(q, ARRAY[jid]);
    ELSE
      PERFORM fastjobs.cancel_unstarted(q, ARRAY[jid], mark_ttl_ms);
    END IF;
    RETURN;
  END IF;
  SELECT s2.state INTO state FROM fastjobs.status(q, jid) s2;
  done := remove AND state <> 'unknown';
  IF done THEN PERFORM fastjobs.forget(q, jid); END IF;
END $$;

-- Deletes what a job left behind: its result row, progress, log lines and callback record.
CREATE OR REPLACE FUNCTION fastjobs.forget(q text, jid text) RETURNS void LANGUAGE sql AS $$
  DELETE FROM fastjobs.results WHERE queue = q AND id = jid;
  DELETE FROM fastjobs.progress WHERE queue = q AND id = jid;
  DELETE FROM fastjobs.logs WHERE queue = q AND id = jid;
  DELETE FROM fastjobs.callbacks WHERE queue = q AND id = jid;
$$;

-- Cancels up to `lim` waiting and delayed jobs (highest priority and earliest first); returns
-- their records.
CREATE OR REPLACE FUNCTION fastjobs.empty_page(q text, lim integer, mark_ttl_ms bigint) RETURNS bytea[]
LANGUAGE plpgsql AS $$
DECLARE
  ids text[];
  recs bytea[];
BEGIN
  SELECT array_agg(id), array_agg(record) INTO ids, recs FROM (
    SELECT id, record FROM fastjobs.jobs WHERE queue = q AND state IN ('w', 'd')
    ORDER BY state DESC, priority DESC, seq, due_us LIMIT lim FOR UPDATE SKIP LOCKED) page;
  IF ids IS NULL THEN RETURN '{}'; END IF;
  PERFORM fastjobs.cancel_unstarted(q, ids, mark_ttl_ms);
  RETURN recs;
END $$;

-- Puts failed jobs back in their queue (all of them, or the one named), attempts reset;
-- returns how many went back.
CREATE OR REPLACE FUNCTION fastjobs.failed_retry(q text, jid text DEFAULT NULL) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  n bigint;
BEGIN
  UPDATE fastjobs.jobs j SET state = 'w', error = NULL, failed_ms = NULL, record = fastjobs.with_attempt(j.record, 0, 1),
    seq = nextval('fastjobs.job_seq')
  WHERE j.queue = q AND j.state = 'f' AND (jid IS NULL OR j.id = jid) AND j.id NOT LIKE 'undecodable:%';
  GET DIAGNOSTICS n = ROW_COUNT;
  IF n > 0 THEN PERFORM pg_notify('fastjobs_wake', q); END IF;
  RETURN n;
END $$;

-- Every row of queue `q`, and its registry entry; returns how many rows went.
CREATE OR REPLACE FUNCTION fastjobs.obliterate(q text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  total bigint := 0;
  n bigint;
  t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['jobs', 'leases', 'reaped', 'results', 'waiters', 'chunks', 'progress', 'logs', 'callbacks'] LOOP
    EXECUTE format('DELETE FROM fastjobs.%I WHERE queue = $1', t) USING q;
    GET DIAGNOSTICS n = ROW_COUNT;
    total := total + n;
  END LOOP;
  DELETE FROM fastjobs.queues WHERE name = q;
  RETURN total;
END $$;
