-- fastjobs schema, version 3: settling a flow's children (rust/lua/flow_settle.lua).

-- A field of a bookkeeping record, as text (NULL when missing).
CREATE OR REPLACE FUNCTION fastjobs.book_text(b text, f text) RETURNS text LANGUAGE sql STABLE AS $$
  SELECT convert_from(value, 'UTF8') FROM fastjobs.book_fields WHERE book = b AND field = f
$$;

CREATE OR REPLACE FUNCTION fastjobs.book_put(b text, f text, v bytea) RETURNS void LANGUAGE sql AS $$
  INSERT INTO fastjobs.book_fields VALUES (b, f, v) ON CONFLICT (book, field) DO UPDATE SET value = excluded.value
$$;

-- A child `child` of flow record `b` finished for good ('c' completed, 'f' failed, its
-- attempts used up). Counted once however often it is reported; the answer tells what its
-- parent must do, the same on every repeat: {'wait'}, {'release', parent spec} or {'fail',
-- error JSON}. `dat` is the JSON kept for the parent; `policy` the child's: fail_parent,
-- ignore or continue_parent.
CREATE OR REPLACE FUNCTION fastjobs.flow_settle(b text, child bigint, parent bigint, outcome text, job text, dat bytea, policy text)
RETURNS bytea[] LANGUAGE plpgsql AS $$
DECLARE
  st text;
BEGIN
  INSERT INTO fastjobs.books (book) VALUES (b) ON CONFLICT DO NOTHING;
  -- One settlement of a flow at a time.
  PERFORM 1 FROM fastjobs.books WHERE book = b FOR UPDATE;
  INSERT INTO fastjobs.book_fields VALUES (b, 'settled:' || child, convert_to(outcome, 'UTF8')) ON CONFLICT DO NOTHING;
  IF FOUND THEN
    IF outcome = 'f' AND policy = 'fail_parent' THEN
      IF fastjobs.book_text(b, 'state:' || parent) IS DISTINCT FROM 'failed' THEN
        PERFORM fastjobs.book_put(b, 'state:' || parent, convert_to('failed', 'UTF8'));
        PERFORM fastjobs.book_put(b, 'error:' || parent, dat);
      END IF;
    ELSE
      IF NOT (outcome = 'f' AND policy = 'continue_parent') THEN
        INSERT INTO fastjobs.flow_results VALUES (b, parent, job, dat)
        ON CONFLICT (flow, node, job_id) DO UPDATE SET data = excluded.data;
      END IF;
      PERFORM fastjobs.book_put(b, 'pending:' || parent,
        convert_to((coalesce(fastjobs.book_text(b, 'pending:' || parent)::bigint, 0) - 1)::text, 'UTF8'));
    END IF;
  END IF;
  st := fastjobs.book_text(b, 'state:' || parent);
  IF st = 'failed' THEN
    RETURN ARRAY[convert_to('fail', 'UTF8'), (SELECT value FROM fastjobs.book_fields WHERE book = b AND field = 'error:' || parent)];
  END IF;
  IF coalesce(fastjobs.book_text(b, 'pending:' || parent)::bigint, 1) <= 0 THEN
    IF st IS DISTINCT FROM 'released' THEN
      PERFORM fastjobs.book_put(b, 'state:' || parent, convert_to('released', 'UTF8'));
      PERFORM fastjobs.book_put(b, 'released_by:' || parent, convert_to(child::text, 'UTF8'));
    END IF;
    RETURN ARRAY[convert_to('release', 'UTF8'), (SELECT value FROM fastjobs.book_fields WHERE book = b AND field = 'spec:' || parent)];
  END IF;
  RETURN ARRAY[convert_to('wait', 'UTF8')];
END $$;
