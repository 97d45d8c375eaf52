-- enqueue: the general dispatch path, for jobs with a delay or a caller-chosen id.
-- KEYS[1] wait   KEYS[2] wake   KEYS[3] producer high-water mark   KEYS[4] delayed zset
-- KEYS[5] jobs hash   KEYS[6] the producer's sent-chunks bitmap (a placeholder without guard)
-- KEYS[7..] one id key per job (<base>:id:<id>), or the jobs hash as a placeholder when that
--           job has a generated id
-- ARGV[1] queue key base   ARGV[2] producer high-water mark (-1: none)
-- ARGV[3] hwm ttl seconds   ARGV[4] id-key ttl milliseconds (after the job's due time)
-- ARGV[5] scheduler channel
-- ARGV[6] a bulk chunk's first sequence number (its guard, common.lua chunk_sent), or -1
-- then per job, 4 values: id, custom (1|0), delay µs from now (0: at once) or @<due time µs>,
-- record
-- Due times are kept as ms with a fraction (µs): a job runs no earlier than asked, to the µs.
-- Returns, per job, 1 if it was written or 0 if a job with that caller-chosen id exists; or
-- -1 when the guarded chunk was written already (a resend: nothing is written).
if chunk_sent(KEYS[6], ARGV[6], ARGV[3]) then return -1 end
local clock = rcall('TIME')
local now_us = clock[1] * 1000000 + clock[2]
local head = rcall('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')[2]
head = head and tonumber(head) or nil
local earliest = nil
local out = {}
local pushed = false
local j = 0
for i = 7, #ARGV, 4 do
  j = j + 1
  local id, custom, when, rec = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local due_us
  if string.sub(when, 1, 1) == '@' then due_us = tonumber(string.sub(when, 2)) else due_us = now_us + tonumber(when) end
  local due = due_us / 1000
  local fresh = true
  if custom == '1' then
    -- The dedup mark outlives the job's wait: a job delayed past the mark's ttl keeps it.
    local ttl = tonumber(ARGV[4]) + math.max(0, math.floor((due_us - now_us) / 1000))
    fresh = rcall('SET', KEYS[6 + j], 'w', 'NX', 'PX', ttl) and true or false
  end
  if fresh then
    if due_us > now_us then
      rcall('ZADD', KEYS[4], due, id)
      rcall('HSET', KEYS[5], id, rec)
      if earliest == nil or due < earliest then earliest = due end
    else
      rcall('RPUSH', ready_key(ARGV[1], rec), rec)
      pushed = true
    end
    out[j] = 1
  else
    out[j] = 0
  end
end
raise_mark(KEYS[3], ARGV[2], ARGV[3])
if pushed then wake(KEYS[2]) end
-- A job due before the head the schedulers sleep towards: wake them to re-arm their timers.
if earliest ~= nil and (head == nil or earliest < head) then
  rcall('PUBLISH', ARGV[5], tostring(earliest))
end
return out
