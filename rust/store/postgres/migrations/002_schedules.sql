-- fastjobs schema, version 2: schedules (JobScheduler), as rust/lua/sched_*.lua keep them.
-- `names`/`vals` are the fields of the definition the caller wrote; the others are the
-- schedule's own bookkeeping, read back as fields of the same names.
CREATE TABLE IF NOT EXISTS fastjobs.schedules (
  key text PRIMARY KEY,
  next_ms bigint NOT NULL,
  timing text NOT NULL,
  anchor_ms bigint NOT NULL,
  created_ms bigint NOT NULL,
  updated_ms bigint NOT NULL,
  runs bigint NOT NULL DEFAULT 0,
  last_run_ms bigint,
  last_job_id text,
  names text[] NOT NULL,
  vals bytea[] NOT NULL
);
CREATE INDEX IF NOT EXISTS schedules_next ON fastjobs.schedules (next_ms);

-- Creates or updates a schedule: an unchanged timing keeps its next run and counters, a new
-- one takes `next` and `anchor` (and wakes the drivers). Returns (created, next run ms).
CREATE OR REPLACE FUNCTION fastjobs.schedule_upsert(k text, tm text, nxt bigint, anchor bigint, ns text[], vs bytea[],
                                                    OUT created boolean, OUT next_ms bigint)
LANGUAGE plpgsql AS $$
DECLARE
  now_ms bigint := fastjobs.now_us() / 1000;
  old fastjobs.schedules;
BEGIN
  SELECT * INTO old FROM fastjobs.schedules WHERE key = k FOR UPDATE;
  created := NOT FOUND;
  IF FOUND AND old.timing = tm THEN
    UPDATE fastjobs.schedules SET updated_ms = now_ms, names = ns, vals = vs WHERE key = k;
    next_ms := old.next_ms;
    RETURN;
  END IF;
  INSERT INTO fastjobs.schedules (key, next_ms, timing, anchor_ms, created_ms, updated_ms, names, vals)
  VALUES (k, nxt, tm, anchor, now_ms, now_ms, ns, vs)
  ON CONFLICT (key) DO UPDATE SET next_ms = nxt, timing = tm, anchor_ms = anchor, updated_ms = now_ms, names = ns, vals = vs;
  next_ms := nxt;
  PERFORM pg_notify('fastjobs_schedules', '');
END $$;

-- Moves a schedule from tick `tick` to `nxt` (-1: it is done and goes) unless another driver
-- did; an empty `job` puts it aside until `nxt` without counting a run.
CREATE OR REPLACE FUNCTION fastjobs.schedule_advance(k text, tick bigint, nxt bigint, job text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM 1 FROM fastjobs.schedules WHERE key = k AND next_ms = tick FOR UPDATE;
  IF NOT FOUND THEN RETURN false; END IF;
  IF job = '' THEN
    UPDATE fastjobs.schedules SET next_ms = nxt WHERE key = k;
  ELSIF nxt = -1 THEN
    DELETE FROM fastjobs.schedules WHERE key = k;
  ELSE
    UPDATE fastjobs.schedules SET next_ms = nxt, runs = runs + 1, last_run_ms = tick, last_job_id = job WHERE key = k;
  END IF;
  RETURN true;
END $$;
