-- Tried on the bench without a build (benches/peers/pg_statements.py --sql FILE), not in the
-- schema: the four events triggers of migration 008 return at once while no queue has its
-- events on. As written, every reserve's UPDATE runs events_moved's join of its transition
-- tables (and each row's record_name/record_attempt) before the join to `queues` finds no
-- queue with events on: ~70 µs of server CPU per job drained (benches/RESULTS.md).

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
