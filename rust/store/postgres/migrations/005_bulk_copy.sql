-- fastjobs schema, version 5: bulk chunks by binary COPY. The store copies a chunk's ids and
-- records into its connection's temporary table `fastjobs_staging` (ord, id, record; emptied
-- at commit), in the transaction that wrote the chunk's guard row, then calls this.

-- Writes the staged jobs of queue `q` in their order, due after `delay_us` (the server's
-- clock) or at `at_us`; wakes the queue's workers or schedulers on commit. Returns how many.
CREATE OR REPLACE FUNCTION fastjobs.enqueue_staged(q text, delay_us bigint, at_us bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
  now_us bigint := fastjobs.now_us();
  due bigint := coalesce(at_us, now_us + delay_us);
  later boolean := due > now_us;
  n bigint;
BEGIN
  INSERT INTO fastjobs.queues (name) VALUES (q) ON CONFLICT DO NOTHING;
  INSERT INTO fastjobs.jobs (queue, id, state, priority, seq, due_us, record)
  SELECT q, s.id, CASE WHEN later THEN 'd' ELSE 'w' END, fastjobs.record_priority(s.record), nextval('fastjobs.job_seq'),
         CASE WHEN later THEN due END, s.record
  FROM pg_temp.fastjobs_staging s ORDER BY s.ord
  ON CONFLICT DO NOTHING;
  GET DIAGNOSTICS n = ROW_COUNT;
  IF n > 0 THEN PERFORM pg_notify(CASE WHEN later THEN 'fastjobs_sched' ELSE 'fastjobs_wake' END, q); END IF;
  RETURN n;
END $$;
