-- enqueue: the general dispatch path, for jobs with a delay, a caller-chosen id, a
-- deduplication key or a group (its options name it, `"group"`: a job due now goes to its
-- group's list, common.lua push_group).
-- KEYS[1] wait   KEYS[2] wake   KEYS[3] producer high-water mark   KEYS[4] delayed zset
-- KEYS[5] jobs hash   KEYS[6] the producer's sent-chunks bitmap (a placeholder without guard)
-- KEYS[7..6+n] one id key per job (<base>:id:<id>), or the jobs hash as a placeholder when that
--           job has a generated id
-- KEYS[7+n..] the mark of each job's deduplication key (<base>:dedup:<key>), in job order, for
--           the jobs that have one
-- ARGV[1] queue key base   ARGV[2] producer high-water mark (-1: none)
-- ARGV[3] hwm ttl seconds   ARGV[4] id-key ttl milliseconds (after the job's due time)
-- ARGV[5] scheduler channel
-- ARGV[6] a bulk chunk's first sequence number (its guard, common.lua chunk_sent), or -1
-- then per job, 4 values: id, flags, delay µs from now (0: at once) or @<due time µs>, record
--   flags: '1' caller-chosen id, '0' generated; then, for a job with a deduplication key, its
--   mode: 't<ms>' dropped while the mark lives (ms from now), 'u' dropped until the job holding
--   the key settles (ack.lua and tick.lua release it; the record's options name the key), 'd'
--   debounce: a job still delayed and never run under the key takes this record (its id kept)
--   and this due time
-- Due times are kept as ms with a fraction (µs): a job runs no earlier than asked, to the µs.
-- Returns, per job, 1 if it was written, 0 if a job with that caller-chosen id exists, or the
-- id of the job holding the deduplication key (nothing new was written; debounced, that job
-- took this record); or -1 when the guarded chunk was written already (a resend: nothing is
-- written).
if chunk_sent(KEYS[6], ARGV[6], ARGV[3]) then return -1 end
local clock = rcall('TIME')
local now_us = clock[1] * 1000000 + clock[2]
local head = rcall('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')[2]
head = head and tonumber(head) or nil
local earliest = nil
local out = {}
local pushed = false
local j = 0
local marks = 6 + (#ARGV - 6) / 4 -- KEYS index before the next deduplication mark
-- What the events stream is told (common.lua emit), while it is on: ready and delayed jobs.
local told = events_on(ARGV[1]) and {ready = {}, delayed = {}, names = {}, due = {}} or nil
local function tell_delayed(id, rec, due)
  if not told then return end
  local d = told.delayed
  d[#d + 1] = id
  told.names[#d] = record_name(rec)
  told.due[#d] = string.format('%d', math.ceil(due))
end

-- The job holding a deduplication key, from its mark: a job id, or nil (no mark, or one that
-- is not a string: written by something else, it is replaced).
local function holder(mark)
  local held = redis.pcall('GET', mark)
  if type(held) == 'string' then return held end
  return nil
end

-- A job with a deduplication key, before it is written: the id of the job that holds the key
-- (this dispatch goes no further), or nil after this job took the key. `ttl` (ms) keeps marks
-- 'u' and 'd' beyond the job's due time, as the id keys are kept.
local function deduplicate(mark, mode, id, rec, due_us, ttl)
  local m = ssub(mode, 1, 1)
  if m == 't' or m == 'u' then
    local px = m == 't' and ssub(mode, 2) or ttl
    if rcall('SET', mark, id, 'NX', 'PX', px) then return nil end
    local held = holder(mark)
    if held then return held end
    rcall('SET', mark, id, 'PX', px)
    return nil
  end
  -- Debounce: the holder is replaced while it is delayed and has never run (attempt 0, not an
  -- orphan); once it was promoted or started, this dispatch is a new job holding the key.
  local held = holder(mark)
  if held then
    local old = rcall('HGET', KEYS[5], held)
    if old and sbyte(old, 1) == RECORD and record_attempt(old) == 0 and rcall('ZSCORE', KEYS[4], held) then
      local n = sbyte(rec, 7) or 0
      rcall('HSET', KEYS[5], held, ssub(rec, 1, 6) .. string.char(#held) .. held .. ssub(rec, 8 + n))
      rcall('ZADD', KEYS[4], due_us / 1000, held)
      tell_delayed(held, rec, due_us / 1000)
      rcall('PEXPIRE', mark, ttl)
      if earliest == nil or due_us / 1000 < earliest then earliest = due_us / 1000 end
      return held
    end
  end
  rcall('SET', mark, id, 'PX', ttl)
  return nil
end

for i = 7, #ARGV, 4 do
  j = j + 1
  local id, custom, when, rec = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local due_us
  if string.sub(when, 1, 1) == '@' then due_us = tonumber(string.sub(when, 2)) else due_us = now_us + tonumber(when) end
  local due = due_us / 1000
  local fresh = true
  -- The marks outlive the job's wait: a job delayed past the mark's ttl keeps it.
  local ttl
  if #custom > 1 then
    marks = marks + 1
    ttl = tonumber(ARGV[4]) + math.max(0, math.floor((due_us - now_us) / 1000))
    local held = deduplicate(KEYS[marks], ssub(custom, 2), id, rec, due_us, ttl)
    if held then
      out[j] = held
      fresh = false
    end
    custom = ssub(custom, 1, 1)
  end
  if fresh and custom == '1' then
    ttl = ttl or tonumber(ARGV[4]) + math.max(0, math.floor((due_us - now_us) / 1000))
    fresh = rcall('SET', KEYS[6 + j], 'w', 'NX', 'PX', ttl) and true or false
    if not fresh then out[j] = 0 end
  end
  if fresh then
    if due_us > now_us then
      rcall('ZADD', KEYS[4], due, id)
      rcall('HSET', KEYS[5], id, rec)
      tell_delayed(id, rec, due)
      if earliest == nil or due < earliest then earliest = due end
    else
      -- A job of a group waits in its group's list (common.lua push_group).
      local g = record_group(rec)
      if g then push_group(ARGV[1], g, {rec}, false) else rcall('RPUSH', ready_key(ARGV[1], rec), rec) end
      pushed = true
      if told then told.ready[#told.ready + 1] = rec end
    end
    out[j] = 1
  end
end
raise_mark(KEYS[3], ARGV[2], ARGV[3])
if told then
  emit_records(ARGV[1], 'waiting', told.ready)
  emit(ARGV[1], 'delayed', told.delayed, told.names, {'d', json_list(told.due)})
end
if pushed then wake(KEYS[2]) end
-- A job due before the head the schedulers sleep towards: wake them to re-arm their timers.
if earliest ~= nil and (head == nil or earliest < head) then
  rcall('PUBLISH', ARGV[5], tostring(earliest))
end
return out
