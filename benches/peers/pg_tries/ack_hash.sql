-- Tried on the bench without a build (benches/peers/pg_statements.py --sql FILE), not in the
-- schema: fastjobs.ack plans its joins without nested loops. Its `ended` and `moved` CTEs
-- join the leased rows (estimated at 1 row by the jobs_leased index) to the CTE `e` (the
-- batch, estimated at 10 rows) by a nested loop whose inner side is a CTE scan: every leased
-- row scans the whole batch, O(batch²): 343 jobs, 117,306 rows removed by the join filter,
-- 36 ms (benches/RESULTS.md). A function-level setting is the quick way to measure it; a
-- migration would rather join by the primary key (j.id = ANY(ids)) or hash the batch.

DO $$ DECLARE f regprocedure; BEGIN
  FOR f IN SELECT oid::regprocedure FROM pg_proc WHERE proname = 'ack' AND pronamespace = 'fastjobs'::regnamespace LOOP
    EXECUTE format('ALTER FUNCTION %s SET enable_nestloop = off', f);
  END LOOP;
END $$;
