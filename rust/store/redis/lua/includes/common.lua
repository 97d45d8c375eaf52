-- Shared helpers, prepended to every script at build time (scripts.rs).
-- Record header offsets (1-based, see record.rs): 1 kind, 2-3 attempt, 4-5 max attempts,
-- 6 priority, 7 id length n, 8.. id, 8+n name length m, then the name, 6 bytes enqueued at,
-- 2 bytes options length k, the options, the payload.
local rcall = redis.call
-- Locals, not global lookups: these run once per record on a drain's hot path.
local sbyte, ssub = string.byte, string.sub

-- First byte of a list element (record.rs): a job record; the same job orphaned (the worker
-- that held it died while it may have been running it: its next run goes alone, its start
-- recorded first, see start.lua and tick.lua); a run of records.
local RECORD, ORPHAN, RUN = 1, 2, 254

local function now_ms()
  local t = rcall('TIME')
  return t[1] * 1000 + math.floor(t[2] / 1000)
end

-- The readers below never fail on a damaged record (a missing byte reads as 0): a script
-- must not stop on one bad element and leave its neighbours' work half done.
local function record_id(rec)
  return ssub(rec, 8, 7 + (sbyte(rec, 7) or 0))
end

local function record_attempt(rec)
  return (sbyte(rec, 2) or 0) * 256 + (sbyte(rec, 3) or 0)
end

local function record_max_attempts(rec)
  return (sbyte(rec, 4) or 0) * 256 + (sbyte(rec, 5) or 0)
end

-- The record with its attempt counter set; `kind` (RECORD or ORPHAN) replaces its first byte.
local function with_attempt(rec, n, kind)
  local first = kind and string.char(kind) or ssub(rec, 1, 1)
  return first .. string.char(math.floor(n / 256) % 256, n % 256) .. ssub(rec, 4)
end

-- The options JSON of a record ('' when it has none).
local function record_options(rec)
  local n = sbyte(rec, 7) or 0
  local m = sbyte(rec, 8 + n) or 0
  local hi, lo = sbyte(rec, 15 + n + m, 16 + n + m)
  return ssub(rec, 17 + n + m, 16 + n + m + (hi or 0) * 256 + (lo or 0))
end

-- Releases a deduplication key held until its job settles (enqueue.lua, mode 'u'): the mark
-- `<base>:dedup:<key>` goes only while it still names this job (a mark that is not a string,
-- written by something else, is left alone and never stops the script).
local function release_dedup(base, key, id)
  local mark = base .. ':dedup:' .. key
  if redis.pcall('GET', mark) == id then rcall('DEL', mark) end
end

-- Releases the deduplication key a record's options say its job holds, if any (for paths
-- that settle a job without the engine, which passes the key itself: tick, cancel).
local function release_dedup_of(base, rec, id)
  local opts = rec and record_options(rec) or ''
  if #opts > 0 and string.find(opts, '"dedup"', 1, true) then
    local ok, o = pcall(cjson.decode, opts)
    if ok and type(o) == 'table' and type(o.dedup) == 'string' then release_dedup(base, o.dedup, id) end
  end
end

-- Groups (README "Groups"): a job dispatched with a group waits in its group's own FIFO list
-- `<base>:group:<key>`, not in the ready lists. `<base>:groups` is the ring that reserve.lua
-- serves in turn: the groups that have jobs waiting, each once, and the ungrouped ready lists
-- as one more member, the empty string (no group key is empty), put first when the ring is
-- made. The ring exists only while a group has jobs waiting, so a queue without groups never
-- reads more than its name in one EXISTS. `<base>:gwaiting` counts the grouped jobs waiting
-- (for counts(); meaningless while the ring is missing); `<base>:gactive` holds, per group, its
-- jobs leased now (for the per-group concurrency limit of `<base>:glimit`).
local UNGROUPED = ''

-- The group a record's options name (`"group"`), or nil. Options are decoded only when they
-- mention it: a record without options costs three byte reads.
local function record_group(rec)
  local opts = record_options(rec)
  if #opts == 0 or not string.find(opts, '"group"', 1, true) then return nil end
  local ok, o = pcall(cjson.decode, opts)
  if ok and type(o) == 'table' and type(o.group) == 'string' and #o.group > 0 then return o.group end
  return nil
end

-- Adds to the count of grouped jobs waiting (a value that is not a number starts again).
local function gwaiting_add(base, n)
  local key = base .. ':gwaiting'
  local r = redis.pcall('INCRBY', key, n)
  if type(r) ~= 'number' then
    r = math.max(0, n)
    rcall('SET', key, r)
  end
  if r <= 0 then rcall('DEL', key) end
end

-- The number of grouped jobs waiting: the counter while the ring exists, else 0.
local function grouped_count(base)
  if rcall('EXISTS', base .. ':groups') == 0 then return 0 end
  return math.max(0, tonumber(rcall('GET', base .. ':gwaiting') or '0') or 0)
end

-- Takes group `g` out of the ring (its list is empty now); the ring goes, with the waiting
-- count, when only the ungrouped member is left.
local function ring_drop(base, g)
  local ring = base .. ':groups'
  rcall('LREM', ring, 0, g)
  local rest = rcall('LRANGE', ring, 0, 1)
  if #rest == 0 or (#rest == 1 and rest[1] == UNGROUPED) then rcall('DEL', ring, base .. ':gwaiting') end
end

-- Adds waiting records of group `g`, in order, at the tail (dispatch, promotion, a retry) or
-- at the head (a hand-back, an orphan); a group whose list was empty joins the ring at its
-- tail (the ring is made with the ungrouped member first).
local function push_group(base, g, recs, head)
  local key = base .. ':group:' .. g
  local n = 0
  if head then
    for i = #recs, 1, -1 do n = rcall('LPUSH', key, recs[i]) end
  else
    for s = 1, #recs, 1000 do n = rcall('RPUSH', key, unpack(recs, s, math.min(s + 999, #recs))) end
  end
  if n == #recs then
    local ring = base .. ':groups'
    if rcall('EXISTS', ring) == 0 then rcall('RPUSH', ring, UNGROUPED) end
    rcall('RPUSH', ring, g)
  end
  gwaiting_add(base, #recs)
end

-- A leased job of group `g` left its lease (settled, handed back, reaped): one fewer leased.
local function group_done(base, g, n)
  local key = base .. ':gactive'
  local left = redis.pcall('HINCRBY', key, g, -(n or 1))
  if type(left) ~= 'number' or left <= 0 then redis.pcall('HDEL', key, g) end
end

-- Whether a record's header holds together: a known kind, a priority, an id and a name that
-- are not empty, and every byte the header announces. Anything else that reaches a ready
-- list or the jobs hash is failed as undecodable (fail_undecodable), never leased.
local function record_ok(rec)
  local kind, _, _, _, _, p, n = sbyte(rec, 1, 7)
  if (kind ~= RECORD and kind ~= ORPHAN) or not n or n == 0 or p > 9 then return false end
  local m = sbyte(rec, 8 + n)
  if not m or m == 0 then return false end
  local hi, lo = sbyte(rec, 15 + n + m, 16 + n + m)
  return lo ~= nil and #rec >= 16 + n + m + hi * 256 + lo
end

-- The id of a record a reserve may lease, or nil: its kind byte says it is a job record and
-- its id is not empty. The lighter check of the drain's hot path (one call per record): the
-- worker decodes every record it leases and fails one that does not hold together with a
-- DecodeError under this id, so nothing is leased that cannot be settled.
local function lease_id(rec)
  local kind, _, _, _, _, _, n = sbyte(rec, 1, 7)
  if (kind ~= RECORD and kind ~= ORPHAN) or not n or n == 0 then return nil end
  return ssub(rec, 8, 7 + n)
end

-- The queue's name from its key base `<prefix>:{<queue>}`, for messages.
local function queue_name(base)
  return string.match(base, '{(.*)}$') or base
end

-- The name of a record's job.
local function record_name(rec)
  local n = sbyte(rec, 7) or 0
  return ssub(rec, 9 + n, 8 + n + (sbyte(rec, 8 + n) or 0))
end

-- Events (`Queue.events`, docs/DESIGN.md "Events"): while `<base>:events:on` holds the length
-- the stream keeps, state changes add to the stream `<base>:events` one entry per script call
-- and kind, listing its jobs (docs/DATA.md "Events"). Off, a script call that has something to
-- tell pays one GET, and nothing per job. Cached per call and queue (a script may serve several).
local events_cap = {}
local function events_on(base)
  local cap = events_cap[base]
  if cap == nil then
    cap = tonumber(redis.pcall('GET', base .. ':events:on')) or false
    events_cap[base] = cap
  end
  return cap
end

-- A JSON array of values that are JSON already (results, errors, numbers), '' read as null.
local function json_list(values)
  local out = {}
  for i = 1, #values do out[i] = values[i] == '' and 'null' or values[i] end
  return '[' .. table.concat(out, ',') .. ']'
end

-- Adds one entry of kind `kind` for the jobs `ids`: field `i` their ids, one per line (an id
-- holds no whitespace: no escaping to do), `n` their names as JSON (`names`: a list, one
-- string for all, or nil), then the pairs of `more` (field, text).
local function emit(base, kind, ids, names, more)
  local cap = events_on(base)
  if not cap or #ids == 0 then return end
  local args = {'XADD', base .. ':events', 'MAXLEN', '~', cap, '*', 'e', kind, 'i', table.concat(ids, '\n')}
  if type(names) == 'table' then
    args[#args + 1] = 'n'; args[#args + 1] = cjson.encode(names)
  elseif names then
    args[#args + 1] = 'n'; args[#args + 1] = cjson.encode({names})
  end
  if more then for i = 1, #more do args[#args + 1] = more[i] end end
  rcall(unpack(args))
end

-- Tells the stream of records of kind `kind` (their ids and names, and attempts when
-- `attempts`), for scripts that hold the records.
local function emit_records(base, kind, recs, attempts, more)
  if not events_on(base) or #recs == 0 then return end
  local ids, names, att = {}, {}, {}
  for i = 1, #recs do
    ids[i], names[i] = record_id(recs[i]), record_name(recs[i])
    if attempts then att[i] = record_attempt(recs[i]) end
  end
  local extra = more or {}
  if attempts then
    extra[#extra + 1] = 'a'; extra[#extra + 1] = json_list(att)
  end
  emit(base, kind, ids, names, extra)
end

-- Adds to a counter of the stats hash; a field that is not a number (written by something
-- else) starts again from this count rather than failing the script: counters are a report,
-- and a job's outcome must not hang on one.
local function bump(stats, field, n)
  local r = redis.pcall('HINCRBY', stats, field, n)
  if type(r) == 'table' and r.err then redis.pcall('HSET', stats, field, n) end
end

-- Something in a ready list, the jobs hash or a lease that is not a job record (written by
-- another program, or damaged): failed at once under a new id `undecodable:<n>`, kept whole
-- for inspection, so it is neither handed to a worker nor lost in silence.
local function fail_undecodable(base, rec, now, why)
  local id = 'undecodable:' .. rcall('INCR', base .. ':undecodable')
  rcall('HSET', base .. ':jobs', id, rec)
  rcall('HSET', base .. ':errors', id, cjson.encode({type = 'DecodeError',
    message = 'an element of queue ' .. queue_name(base) .. ' ' .. (why or 'is not a job record fastjobs can read') ..
      ' (' .. #rec .. ' bytes)',
    traceback = ''}))
  rcall('ZADD', base .. ':failed', now, id)
  bump(base .. ':stats', 'failed', 1)
end

-- Whether `id` is a generated id `<producer:10 alphanumerics>-<seq: 1-8 digits>` (record.rs
-- is_generated_id), for scripts that are not told.
local function is_generated(id)
  return string.match(id, '^%w%w%w%w%w%w%w%w%w%w%-%d+$') ~= nil and #id <= 19
end

-- Marks a job cancelled, for its status: a generated id by a bit of its producer's
-- `<base>:cancelled:<producer>` bitmap (as completions use `done:`), renewed to `ttl` seconds;
-- a caller-chosen id by its mark `x` (kept while the mark lives, so the id is not taken again).
local function mark_cancelled(base, id, custom, ttl)
  if custom then
    local mark = base .. ':id:' .. id
    if not rcall('SET', mark, 'x', 'XX', 'KEEPTTL') then rcall('SET', mark, 'x', 'EX', ttl) end
  else
    local key = base .. ':cancelled:' .. ssub(id, 1, 10)
    rcall('SETBIT', key, tonumber(ssub(id, 12)), 1)
    rcall('EXPIRE', key, ttl)
  end
end

-- How long a request to cancel a running job is kept (7 days): the worker that runs it hears
-- of it at once (`<base>:control`) or at its next heartbeat (extend.lua).
local CANCEL_ASK_S = 604800

-- Settles a job that had not started (handed back, reaped, or taken from an inbox) as
-- cancelled, because somebody asked (cancel_ask): marked, its waiters told, counted.
local CANCELLED_TTL_S = 2592000 -- as the completion marks (store/redis/mod.rs MARK_TTL_SECS)
local function cancel_unstarted(base, id, rec)
  mark_cancelled(base, id, not is_generated(id), CANCELLED_TTL_S)
  release_dedup_of(base, rec, id)
  rcall('HDEL', base .. ':errors', id)
  if rcall('HDEL', base .. ':waiters', id) == 1 then rcall('PUBLISH', base .. ':results', 'x' .. id .. '\n') end
  bump(base .. ':stats', 'cancelled', 1)
  emit(base, 'cancelled', {id}, rec and record_name(rec) or nil)
end

-- Whether somebody asked to cancel job `id` of lease `token` (the ask is used up).
local function cancel_was_asked(base, token, id)
  return rcall('SREM', base .. ':cancel:' .. token, id) == 1
end

-- Asks the worker holding lease `token` to cancel job `id` (cooperatively: the handler sees
-- the request and gives up, or finishes anyway).
local function cancel_ask(base, token, id, channel)
  local key = base .. ':cancel:' .. token
  rcall('SADD', key, id)
  rcall('EXPIRE', key, CANCEL_ASK_S)
  rcall('PUBLISH', channel, 'cancel')
end

-- Raises a producer's high-water mark (`<base>:hwm:<producer>`) to `seq`, never lowering it
-- (sends from several threads may land out of order), and renews its ttl: one SET ... GET, a
-- second SET only when the mark was already higher. No-op for seq < 0 (no generated id).
local function raise_mark(key, seq, ttl)
  local n = tonumber(seq)
  if n < 0 then return end
  local old = rcall('SET', key, seq, 'EX', ttl, 'GET') -- seq as sent: no float formatting
  old = old and tonumber(old)
  if old and old > n then rcall('SET', key, string.format('%d', old), 'EX', ttl) end
end

-- Marks a chunk of a bulk dispatch written: bit `seq` (the chunk's first sequence number)
-- of the producer's bitmap `key`, renewed like the high-water mark. Returns true when it was
-- set already: this is a resend of a chunk whose first write's answer was lost, and it landed,
-- so the resend must write nothing. seq < 0: no guard (false).
local function chunk_sent(key, seq, ttl)
  local n = tonumber(seq)
  if n < 0 then return false end
  local was = rcall('SETBIT', key, n, 1)
  rcall('EXPIRE', key, ttl)
  return was == 1
end

-- The ready list of a record: `<base>:wait` for priority 0, `<base>:wait:<p>` above it, with
-- the level noted in `<base>:prios` so reserve finds it. All share the queue's hash tag.
local function ready_key(base, rec)
  local p = sbyte(rec, 6) or 0
  if p == 0 or p > 9 then return base .. ':wait' end
  rcall('ZADD', base .. ':prios', p, p)
  return base .. ':wait:' .. p
end

-- Puts records back at the head (LPUSH, last first, so their order is kept) or the tail; a
-- record of a group goes to its group's list (push_group).
local function push_ready(base, recs, head)
  local plain, grouped, names = {}, nil, nil
  for _, rec in ipairs(recs) do
    local g = record_group(rec)
    if g then
      if not grouped then grouped, names = {}, {} end
      local t = grouped[g]
      if not t then
        t = {}
        grouped[g] = t
        names[#names + 1] = g
      end
      t[#t + 1] = rec
    else
      plain[#plain + 1] = rec
    end
  end
  if head then
    for i = #plain, 1, -1 do rcall('LPUSH', ready_key(base, plain[i]), plain[i]) end
  else
    for i = 1, #plain do rcall('RPUSH', ready_key(base, plain[i]), plain[i]) end
  end
  if names then
    for _, g in ipairs(names) do push_group(base, g, grouped[g], head) end
  end
end

-- A list element of `<base>:wait` is a record or a run of records (record.rs): the byte RUN,
-- then per record its length (2 bytes, big-endian) and its bytes. A bulk dispatch writes runs
-- because Redis's cost is per element more than per byte. `<base>:runs` counts the records in
-- runs beyond one per element, so the ready count stays a few O(1) calls. It means nothing
-- while the list is empty (mark.lua sets it afresh when it writes to an empty list), so a
-- count left over by a list deleted by hand, or evicted, is ignored and then replaced; one
-- that is not a number reads as 0.
local function runs_count(base)
  return tonumber(rcall('GET', base .. ':runs') or '0') or 0
end

-- Whether any job is ready, at any priority level (cheaper than counting them).
local function any_ready(base)
  if rcall('LLEN', base .. ':wait') > 0 then return true end
  for _, p in ipairs(rcall('ZRANGE', base .. ':prios', 0, -1)) do
    if rcall('LLEN', base .. ':wait:' .. p) > 0 then return true end
  end
  return false
end

-- Number of ready jobs over every priority level.
local function ready_count(base)
  local n = rcall('LLEN', base .. ':wait')
  if n > 0 then n = n + runs_count(base) end
  for _, p in ipairs(rcall('ZRANGE', base .. ':prios', 0, -1)) do
    n = n + rcall('LLEN', base .. ':wait:' .. p)
  end
  return n
end

-- Puts up to `max` records of run `el` in `out` after its first `k`; returns how many, and
-- the rest of the run (itself a run) or nil. A damaged length ends the run: what was cut goes
-- on as one record, which fails record_ok and is failed as undecodable. (An element too short
-- to hold a record is taken as one record by pop_wait: it is failed too, never dropped.)
local function split_run(el, max, out, k)
  local at, n, took = 2, #el, 0
  while at <= n and took < max do
    local hi, lo = sbyte(el, at, at + 1)
    local len = (hi or 0) * 256 + (lo or 0)
    took = took + 1
    out[k + took] = ssub(el, at + 2, at + 1 + len)
    at = at + 2 + len
  end
  if at <= n then return took, string.char(RUN) .. ssub(el, at) end
  return took, nil
end

-- Pops up to `want` records of priority 0 into `recs`, splitting runs; what a pop took beyond
-- `want` goes back at the head, in order.
local function pop_wait(base, want, recs)
  local key, runs = base .. ':wait', base .. ':runs'
  -- One record (a hand-over) pops one element whatever the runs: no need to count them.
  local len, extra = 0, 0
  if want > 1 then
    len = rcall('LLEN', key)
    if len == 0 then return end
    extra = runs_count(base)
  end
  local taken = 0 -- records of runs beyond one per element that left the list
  local guess = true
  local have = #recs
  while have < want do
    local need = want - have
    local count = need
    -- Elements hold (len + extra) / len records on average: pop about as many as needed.
    if guess and extra > taken and len > 0 then
      count = math.max(1, math.floor(need * len / (len + extra - taken)))
    end
    local got = rcall('LPOP', key, count)
    if not got then len = 0; break end
    len = len - #got
    guess = false
    local back = {}
    for _, el in ipairs(got) do
      if have >= want then
        back[#back + 1] = el
      elseif sbyte(el, 1) == RUN and #el > 2 then
        guess = true
        local took, rest = split_run(el, want - have, recs, have)
        have = have + took
        if rest then
          back[#back + 1] = rest -- a run of k records leaves k - 1 extra; its rest, k - took - 1
          taken = taken + took
        else
          taken = taken + took - 1
        end
      else
        have = have + 1
        recs[have] = el
      end
    end
    if #back > 0 then
      for i = #back, 1, -1 do rcall('LPUSH', key, back[i]) end
      len = len + #back
    end
  end
  if want > 1 and len == 0 then
    rcall('DEL', runs) -- emptied: no run is left, whatever the count said
  elseif taken > 0 then
    local left = runs_count(base) - taken -- read again: a hand-over (want 1) did not read it
    if left > 0 then rcall('SET', runs, left) else rcall('DEL', runs) end
  end
end

-- Pops up to `want` ready records, higher priority first, FIFO within a level.
local function pop_ready(base, want)
  local recs = {}
  for _, p in ipairs(rcall('ZREVRANGE', base .. ':prios', 0, -1)) do
    local got = rcall('LPOP', base .. ':wait:' .. p, want - #recs)
    if got then
      for _, r in ipairs(got) do recs[#recs + 1] = r end
    end
    if #recs < want then rcall('ZREM', base .. ':prios', p) end
    if #recs >= want then return recs end
  end
  pop_wait(base, want, recs)
  return recs
end

-- How long an idle slot holds (reserve.lua renews a slot older than half of it; a worker
-- renews it every second). A worker killed while idle may be handed one job per queue in
-- that time: the job waits for its lease to expire, and its reaping ends the dead worker's
-- slots everywhere in the queue (tick.lua).
local IDLE_SLOT_MS = 3000

-- Whether an idle slot registered at `since` (its score) still holds at `now`.
local function slot_live(since, now)
  return tonumber(since) > now - IDLE_SLOT_MS
end

-- Leases one record to a worker that registered as idle and pushes it onto that worker's
-- inbox, which the worker is blocked on: the job starts one round trip sooner than by a
-- wake-up followed by a reserve. The slot is used up. The lease is the slot's own token
-- (reserve.lua), so a dead worker's hand-off is reaped like any lease; the reaper also
-- deletes a dead worker's inbox (tick.lua), so the hand-over sets no ttl on it. Returns false
-- (and drops the slot) when the slot is not one reserve.lua wrote.
local function hand_over(base, slot, rec, now)
  rcall('ZREM', base .. ':idle', slot)
  local worker, token, lease = string.match(slot, '^(.-)|(.-)|(%d+)$')
  if not lease or #token == 0 or #token > 255 then return false end
  rcall('HSET', base .. ':lease:' .. token, record_id(rec), rec)
  rcall('ZADD', base .. ':active', now + tonumber(lease), token)
  rcall('RPUSH', base .. ':inbox:' .. worker, string.char(#token) .. token .. rec)
  emit(base, 'active', {record_id(rec)}, nil, {'a', '[' .. record_attempt(rec) .. ']', 'w', worker})
  return true
end

-- Takes back one item of a worker's inbox: the record, moved out of its hand-off lease (the
-- lease goes when empty), or nil for a stop marker (empty token), a job already reaped, or
-- one somebody asked to cancel meanwhile (settled as cancelled here).
local function take_handed(base, active, item)
  local n = sbyte(item, 1) or 0
  if n == 0 then return nil end
  local t, rec = ssub(item, 2, 1 + n), ssub(item, 2 + n)
  local held = base .. ':lease:' .. t
  local id = record_id(rec)
  if rcall('HDEL', held, id) == 0 then return nil end
  if rcall('EXISTS', held) == 0 then
    rcall('ZREM', active, t)
    rcall('DEL', base .. ':started:' .. t)
  end
  -- Cancelled while it sat in the inbox: it never runs (cancel.lua).
  if cancel_was_asked(base, t, id) then
    cancel_unstarted(base, id, rec)
    return nil
  end
  return rec
end

-- The idle slots of a queue with their scores (when registered), longest idle first.
local function idle_slots(base)
  return rcall('ZRANGE', base .. ':idle', 0, -1, 'WITHSCORES')
end

-- The next ready record a worker can be given, or nil; what is not a job record on the way
-- is failed as undecodable.
local function pop_one(base, now)
  while true do
    local rec = pop_ready(base, 1)[1]
    if not rec or record_ok(rec) then return rec end
    fail_undecodable(base, rec, now)
  end
end

-- Tells workers that ready jobs are waiting: hands one each to idle workers, longest idle
-- first (a worker whose handlers are all busy registered last), then leaves one marker on
-- the wake list (`<base>:wake`) if jobs remain; the marker wakes one blocked worker, which
-- passes it on if work remains after its reserve. `slots`: idle_slots(), if already read.
local function wake(key, slots)
  local base = ssub(key, 1, -6)
  -- A paused queue hands nothing over and wakes nobody (pause.lua, resume.lua); a limited one
  -- hands nothing over either (reserve.lua applies the limits) but wakes a worker.
  local gated = rcall('EXISTS', base .. ':paused', base .. ':limit') > 0
  if gated and rcall('EXISTS', base .. ':paused') == 1 then return end
  slots = (not gated) and (slots or idle_slots(base)) or {}
  if #slots > 0 then
    local now = now_ms()
    local rec = nil
    for i = 1, #slots, 2 do
      if slot_live(slots[i + 1], now) then
        rec = rec or pop_one(base, now)
        if not rec then
          -- Nothing ungrouped to hand over; grouped jobs are never handed over (they go
          -- through reserve.lua's turns and limits): their marker only.
          if rcall('EXISTS', base .. ':groups') == 1 then
            rcall('LPUSH', key, '1')
            rcall('LTRIM', key, 0, 0)
          end
          return
        end
        if hand_over(base, slots[i], rec, now) then rec = nil end
      else
        rcall('ZREM', base .. ':idle', slots[i]) -- not renewed in time
      end
    end
    -- A record popped for a slot that turned out unreadable goes back where it was.
    if rec then rcall('LPUSH', ready_key(base, rec), rec) end
  end
  if any_ready(base) or rcall('EXISTS', base .. ':groups') == 1 then
    rcall('LPUSH', key, '1')
    rcall('LTRIM', key, 0, 0)
  end
end

-- Takes one ready job out of its list by id and returns its record, or nil. Scans every
-- priority level's list from the head in pages (O(position)); a record inside a run leaves
-- the run rewritten without it (a run of one becomes a plain record).
local function remove_ready(base, id)
  local keys = {}
  for _, p in ipairs(rcall('ZREVRANGE', base .. ':prios', 0, -1)) do keys[#keys + 1] = base .. ':wait:' .. p end
  keys[#keys + 1] = base .. ':wait'
  for _, key in ipairs(keys) do
    local at = 0
    while true do
      local page = rcall('LRANGE', key, at, at + 499)
      if #page == 0 then break end
      for k, el in ipairs(page) do
        local index = at + k - 1
        -- Most elements do not hold the id at all: one plain substring search (C) each, and
        -- only the few that do are parsed.
        if not string.find(el, id, 1, true) then
          -- not here
        elseif sbyte(el, 1) == RUN and #el > 2 then
          local recs = {}
          split_run(el, math.huge, recs, 0)
          local held = #recs
          for i, rec in ipairs(recs) do
            if record_id(rec) == id then
              table.remove(recs, i)
              local rest = recs[1]
              if #recs > 1 then
                local parts = {string.char(RUN)}
                for _, r in ipairs(recs) do parts[#parts + 1] = string.char(math.floor(#r / 256), #r % 256) .. r end
                rest = table.concat(parts)
              end
              if rest then rcall('LSET', key, index, rest) else rcall('LREM', key, 1, el) end
              -- A run of k records counted k - 1 beyond its element: one fewer now.
              if held > 1 then
                local left = runs_count(base) - 1
                if left > 0 then rcall('SET', base .. ':runs', left) else rcall('DEL', base .. ':runs') end
              end
              return rec
            end
          end
        elseif lease_id(el) == id then
          -- LREM finds the first equal element: this one, or an identical copy before it.
          rcall('LREM', key, 1, el)
          if rcall('LLEN', key) == 0 and key == base .. ':wait' then rcall('DEL', base .. ':runs') end
          return el
        end
      end
      at = at + #page
    end
  end
  -- Then the lists of the groups with jobs waiting, in ring order (one record per element).
  for _, g in ipairs(rcall('LRANGE', base .. ':groups', 0, -1)) do
    if g ~= UNGROUPED then
      local key = base .. ':group:' .. g
      local at = 0
      while true do
        local page = rcall('LRANGE', key, at, at + 499)
        if #page == 0 then break end
        for _, el in ipairs(page) do
          if string.find(el, id, 1, true) and lease_id(el) == id then
            rcall('LREM', key, 1, el)
            gwaiting_add(base, -1)
            if rcall('EXISTS', key) == 0 then ring_drop(base, g) end
            return el
          end
        end
        at = at + #page
      end
    end
  end
  return nil
end
