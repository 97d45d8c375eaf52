-- Shared helpers, prepended to every script at build time (scripts.rs).
-- Record header offsets (1-based, see codec.rs): 1 version, 2-3 attempt, 4-5 max attempts,
-- 6 priority, 7 id length, 8.. id.
local rcall = redis.call

local function now_ms()
  local t = rcall('TIME')
  return t[1] * 1000 + math.floor(t[2] / 1000)
end

-- One marker at most: it wakes one blocked worker, which passes it on if work remains.
local function wake(key)
  rcall('LPUSH', key, '1')
  rcall('LTRIM', key, 0, 0)
end

local function record_id(rec)
  return string.sub(rec, 8, 7 + string.byte(rec, 7))
end

local function record_attempt(rec)
  return string.byte(rec, 2) * 256 + string.byte(rec, 3)
end

local function record_max_attempts(rec)
  return string.byte(rec, 4) * 256 + string.byte(rec, 5)
end

local function with_attempt(rec, n)
  return string.sub(rec, 1, 1) .. string.char(math.floor(n / 256) % 256, n % 256) .. string.sub(rec, 4)
end

-- The ready list of a record: `<base>:wait` for priority 0, `<base>:wait:<p>` above it, with
-- the level noted in `<base>:prios` so reserve finds it. All share the queue's hash tag.
local function ready_key(base, rec)
  local p = string.byte(rec, 6)
  if p == 0 then return base .. ':wait' end
  rcall('ZADD', base .. ':prios', p, p)
  return base .. ':wait:' .. p
end

-- Puts records back at the head (LPUSH, last first, so their order is kept) or the tail.
local function push_ready(base, recs, head)
  if head then
    for i = #recs, 1, -1 do rcall('LPUSH', ready_key(base, recs[i]), recs[i]) end
  else
    for i = 1, #recs do rcall('RPUSH', ready_key(base, recs[i]), recs[i]) end
  end
end

-- Number of ready jobs over every priority level.
local function ready_count(base)
  local n = rcall('LLEN', base .. ':wait')
  for _, p in ipairs(rcall('ZRANGE', base .. ':prios', 0, -1)) do
    n = n + rcall('LLEN', base .. ':wait:' .. p)
  end
  return n
end

