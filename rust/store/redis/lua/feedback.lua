-- feedback: a running job's progress or log line (`self.progress()`, `self.log()`).
-- KEYS[1] the job's progress string (`…:progress:<id>`) or log list (`…:logs:<id>`)
-- ARGV[1] 'p' progress or 'l' log line   ARGV[2] the entry: a JSON object without its time,
--   `{"value":…,"data":…}` or `{"level":…,"message":…,"data":…}`
-- ARGV[3] ttl seconds of the key (set at every write)   ARGV[4] log lines kept (the newest)
-- The entry is stored with `"at"` (ms, the Redis clock) put first. Returns the time written.
local now = now_ms()
local entry = '{"at":' .. now .. ',' .. ssub(ARGV[2], 2)
if ARGV[1] == 'p' then
  rcall('SET', KEYS[1], entry, 'EX', ARGV[3])
  -- The events stream hears of it (common.lua emit): the key is `<base>:progress:<id>`.
  local base = string.match(KEYS[1], '^(.-})')
  if base then emit(base, 'progress', {ssub(KEYS[1], #base + 11)}, nil, {'x', '[' .. entry .. ']'}) end
else
  local n = rcall('RPUSH', KEYS[1], entry)
  local keep = tonumber(ARGV[4])
  if n > keep then rcall('LTRIM', KEYS[1], -keep, -1) end
  rcall('EXPIRE', KEYS[1], ARGV[3])
end
return now
