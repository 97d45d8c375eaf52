-- fastjobs schema, version 13: the events stream read in an order no later commit goes
-- behind (docs/DESIGN.md "The PostgreSQL store"), and every entry in the shape the other
-- stores give it.
--   A row's `seq` is taken when it is written but the row shows when its transaction commits,
--   in another order: a reader resuming after seq N would miss a lower seq committed later.
--   So the stream is ordered by (horizon, seq), `horizon` being the later of the writing
--   transaction's id and the newest id that had ended when the row was written (its
--   snapshot's xmax - 1), and a reader takes only rows whose horizon is below its snapshot's
--   xmin:
--   - final: a transaction still running, or one to come, has an id >= that xmin, and a row's
--     horizon is at least its writer's id, so no row below the xmin is still to show;
--   - in the order of the changes: a transaction that saw another's committed change writes
--     after that one ended, so its horizon is at least that one's id and at least that one's
--     horizon (a tie goes by seq, taken later);
--   - shown once its writer and every older transaction ended: then the xmin is past both its
--     writer's id and the newest id that had ended before it.
--   Its transaction's id alone would not do: a transaction that took its id early (a row
--   lock, an earlier write) can see, and act on, a change a younger one committed meanwhile.
--   The cost: a transaction held open anywhere on the server (its id below everybody's
--   xmin) holds the stream back until it ends.
--   Entries also tell the worker that leased the jobs (`active`), a completed or cancelled
--   job's name (told by the DELETE of its row, which still has its record), progress, and a
--   reaped job as `stalled` (version 12 told it `waiting`).
CREATE OR REPLACE FUNCTION fastjobs.events_horizon() RETURNS xid8 LANGUAGE sql VOLATILE AS $$
  SELECT greatest(pg_current_xact_id(), (pg_snapshot_xmax(pg_current_snapshot())::text::bigint - 1)::text::xid8)
$$;
ALTER TABLE fastjobs.events ADD COLUMN IF NOT EXISTS horizon xid8 NOT NULL DEFAULT fastjobs.events_horizon();
ALTER TABLE fastjobs.events ADD COLUMN IF NOT EXISTS worker text;
CREATE INDEX IF NOT EXISTS events_order ON fastjobs.events (queue, horizon, seq);

-- events_moved of version 12, with the worker of an `active` entry; a job is `stalled` when
-- its orphaned record goes back from a lease past its deadline (tick marks the record in a
-- statement of its own before it moves the job, so the move's rows no longer differ there).
CREATE OR REPLACE FUNCTION fastjobs.events_moved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM fastjobs.queues WHERE events_keep IS NOT NULL) THEN RETURN NULL; END IF;
  INSERT INTO fastjobs.events (queue, at_ms, kind, ids, names, attempts, due_us, data, worker)
  SELECT m.queue, fastjobs.now_us() / 1000, m.kind, array_agg(m.id ORDER BY m.seq), array_agg(m.name ORDER BY m.seq),
         array_agg(m.attempt ORDER BY m.seq), array_agg(m.due_us ORDER BY m.seq),
         array_agg(CASE WHEN m.kind IN ('failed', 'retrying') THEN m.error END ORDER BY m.seq),
         CASE m.kind WHEN 'active' THEN min(m.worker) END
  FROM (
    SELECT n.queue, n.id, n.seq, fastjobs.record_name(n.record) AS name, fastjobs.record_attempt(o.record) AS attempt, n.due_us,
           n.error, split_part(n.token, '.', 1) AS worker,
           CASE
             WHEN o.state = 'w' AND n.state = 'a' THEN 'active'
             WHEN o.state = 'a' AND n.state = 'f' THEN 'failed'
             WHEN o.state = 'a' AND n.state = 'd' THEN 'retrying'
             WHEN o.state = 'a' AND n.state = 'w' AND get_byte(n.record, 0) = 1
                  AND fastjobs.record_attempt(n.record) > fastjobs.record_attempt(o.record) THEN 'retrying'
             WHEN o.state = 'a' AND n.state = 'w' AND get_byte(n.record, 0) = 2
                  AND EXISTS (SELECT 1 FROM fastjobs.leases l
                              WHERE l.queue = o.queue AND l.token = o.token AND l.deadline_ms <= fastjobs.now_us() / 1000) THEN 'stalled'
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

-- Jobs whose row went: completed (with the result) or cancelled when the same statement left
-- a result row for them (acknowledgements, cancel_unstarted), else removed. A result row kept
-- from before (a caller-chosen id used again) is told by its state only when this transaction
-- wrote it.
CREATE OR REPLACE FUNCTION fastjobs.events_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM fastjobs.queues WHERE events_keep IS NOT NULL) THEN RETURN NULL; END IF;
  INSERT INTO fastjobs.events (queue, at_ms, kind, ids, names, data)
  SELECT g.queue, fastjobs.now_us() / 1000, g.kind, array_agg(g.id ORDER BY g.seq), array_agg(g.name ORDER BY g.seq),
         CASE g.kind WHEN 'completed' THEN array_agg(g.data ORDER BY g.seq) END
  FROM (
    SELECT o.queue, o.id, o.seq, fastjobs.record_name(o.record) AS name, r.data,
           CASE WHEN r.state = 'c' THEN 'completed' WHEN r.state = 'x' AND r.data_expires_ms <> 0 THEN 'cancelled' ELSE 'removed' END AS kind
    FROM old_rows o JOIN fastjobs.queues qu ON qu.name = o.queue AND qu.events_keep IS NOT NULL
    LEFT JOIN fastjobs.results r ON r.queue = o.queue AND r.id = o.id AND r.xmin = pg_current_xact_id()::xid
  ) g
  GROUP BY g.queue, g.kind
  ORDER BY g.queue, g.kind;
  RETURN NULL;
END $$;

-- Ends are told with the rows they ended (events_removed).
DROP TRIGGER IF EXISTS events_ended ON fastjobs.results;
DROP FUNCTION IF EXISTS fastjobs.events_ended();

-- A running job's progress (its entry as Job.progress wrote it, with its time).
CREATE OR REPLACE FUNCTION fastjobs.events_progress() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM fastjobs.queues WHERE events_keep IS NOT NULL) THEN RETURN NULL; END IF;
  INSERT INTO fastjobs.events (queue, at_ms, kind, ids, data)
  SELECT n.queue, fastjobs.now_us() / 1000, 'progress', array_agg(n.id ORDER BY n.id), array_agg(n.entry ORDER BY n.id)
  FROM new_rows n JOIN fastjobs.queues qu ON qu.name = n.queue AND qu.events_keep IS NOT NULL
  GROUP BY n.queue;
  RETURN NULL;
END $$;

-- An upsert fires both: each tells the rows it wrote.
DROP TRIGGER IF EXISTS events_progress ON fastjobs.progress;
CREATE TRIGGER events_progress AFTER INSERT ON fastjobs.progress REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION fastjobs.events_progress();
DROP TRIGGER IF EXISTS events_progress_again ON fastjobs.progress;
CREATE TRIGGER events_progress_again AFTER UPDATE ON fastjobs.progress REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION fastjobs.events_progress();

-- events_trim of version 8, in the stream's order.
CREATE OR REPLACE FUNCTION fastjobs.events_trim(q text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  keep bigint := (SELECT events_keep FROM fastjobs.queues WHERE name = q);
  h xid8;
  s bigint;
  n bigint;
BEGIN
  IF keep IS NULL THEN RETURN 0; END IF;
  SELECT horizon, seq INTO h, s FROM fastjobs.events WHERE queue = q ORDER BY horizon DESC, seq DESC OFFSET keep LIMIT 1;
  IF NOT FOUND THEN RETURN 0; END IF;
  DELETE FROM fastjobs.events WHERE queue = q AND (horizon, seq) <= (h, s);
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END $$;
