-- fastjobs schema, version 9: what is not a job record (written by another program, or
-- damaged) is failed when a reserve meets it, under a new id `undecodable:<n>`, kept whole for
-- inspection (common.lua fail_undecodable): never leased, never lost in silence.
CREATE SEQUENCE IF NOT EXISTS fastjobs.undecodable_seq;

-- Whether a worker can settle a record by id: a job record's kind byte and an id.
CREATE OR REPLACE FUNCTION fastjobs.lease_ok(rec bytea) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE WHEN octet_length(rec) >= 8
              THEN get_byte(rec, 0) IN (1, 2) AND get_byte(rec, 6) > 0 AND octet_length(rec) >= 7 + get_byte(rec, 6)
              ELSE false END
$$;

-- The readers of a record's header never fail on a short one (a missing byte reads as 0).
CREATE OR REPLACE FUNCTION fastjobs.byte_at(rec bytea, i integer) RETURNS integer LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE WHEN octet_length(rec) > i THEN get_byte(rec, i) ELSE 0 END
$$;
CREATE OR REPLACE FUNCTION fastjobs.record_priority(rec bytea) RETURNS smallint LANGUAGE sql IMMUTABLE AS $$
  SELECT least(fastjobs.byte_at(rec, 5), 9)::smallint
$$;
CREATE OR REPLACE FUNCTION fastjobs.record_attempt(rec bytea) RETURNS integer LANGUAGE sql IMMUTABLE AS $$
  SELECT fastjobs.byte_at(rec, 1) * 256 + fastjobs.byte_at(rec, 2)
$$;
CREATE OR REPLACE FUNCTION fastjobs.record_name(rec bytea) RETURNS text LANGUAGE sql IMMUTABLE AS $$
  SELECT convert_from(substring(rec FROM 9 + fastjobs.byte_at(rec, 6) FOR fastjobs.byte_at(rec, 7 + fastjobs.byte_at(rec, 6))), 'UTF8')
$$;

-- Fails the records of lease `tok` that are not job records, as DecodeError.
CREATE OR REPLACE FUNCTION fastjobs.fail_undecodable(q text, tok text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  now_ms bigint := fastjobs.now_us() / 1000;
  n bigint;
BEGIN
  UPDATE fastjobs.jobs SET id = 'undecodable:' || nextval('fastjobs.undecodable_seq'), state = 'f', token = NULL, failed_ms = now_ms,
    error = convert_to(json_build_object('type', 'DecodeError',
      'message', 'an element of queue ' || q || ' is not a job record fastjobs can read (' || octet_length(record) || ' bytes)',
      'traceback', '')::text, 'UTF8')
  WHERE queue = q AND state = 'a' AND token = tok AND NOT fastjobs.lease_ok(record);
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END $$;

-- reserve of version 7: records that are not job records are failed, not leased.
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
