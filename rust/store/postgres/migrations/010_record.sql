-- fastjobs schema, version 10: a job record built in SQL, for a user's own transaction:
--   SELECT fastjobs.enqueue('emails', 'order-7', fastjobs.record('order-7', 'send_receipt', '{"to": "a@b.c"}'));
-- The packed record of docs/DATA.md section 1: kind 1, attempt 0, max attempts, priority, the
-- id and the name (1 to 255 bytes each), the enqueue time (ms, the server's clock), the
-- options JSON (none: empty) and the payload (JSON, as the Python side writes it).
CREATE OR REPLACE FUNCTION fastjobs.record(id text, name text, payload bytea, options bytea DEFAULT '',
                                           max_attempts integer DEFAULT 1, priority integer DEFAULT 0)
RETURNS bytea LANGUAGE plpgsql AS $$
DECLARE
  i bytea := convert_to(id, 'UTF8');
  n bytea := convert_to(name, 'UTF8');
  now_ms bigint := fastjobs.now_us() / 1000;
BEGIN
  IF octet_length(i) NOT BETWEEN 1 AND 255 OR octet_length(n) NOT BETWEEN 1 AND 255 THEN
    RAISE EXCEPTION 'fastjobs.record: the id and the name are 1 to 255 bytes (id %, name %)', octet_length(i), octet_length(n)
      USING ERRCODE = '22023';
  END IF;
  IF max_attempts NOT BETWEEN 1 AND 65535 OR priority NOT BETWEEN 0 AND 9 OR octet_length(options) > 65535 THEN
    RAISE EXCEPTION 'fastjobs.record: max_attempts is 1 to 65535, priority 0 to 9, options at most 65535 bytes'
      USING ERRCODE = '22023';
  END IF;
  RETURN '\x01'::bytea || '\x0000'::bytea
    || substring(int4send(max_attempts) FROM 3 FOR 2) || substring(int4send(priority) FROM 4 FOR 1)
    || substring(int4send(octet_length(i)) FROM 4 FOR 1) || i
    || substring(int4send(octet_length(n)) FROM 4 FOR 1) || n
    || substring(int8send(now_ms) FROM 3 FOR 6)
    || substring(int4send(octet_length(options)) FROM 3 FOR 2) || options
    || payload;
END $$;
