-- mark: the bookkeeping of a fast-path push, run by EVAL (source, never NOSCRIPT) inside the
-- same MULTI/EXEC as the RPUSH of the records, so both apply together.
-- KEYS[1] producer high-water mark   KEYS[2] wake list   KEYS[3] runs counter (common.lua)
-- KEYS[4] wait list   KEYS[5] the producer's sent-chunks bitmap (common.lua chunk_sent)
-- ARGV[1] highest sequence number pushed   ARGV[2] ttl of the mark, seconds
-- ARGV[3] records pushed beyond one per list element (in runs)   ARGV[4] elements pushed
-- ARGV[5] the chunk's first sequence number (its guard), or -1 for none
-- ARGV[6] the jobs as runs of generated ids, for the events stream: a JSON array of
--   [producer, first sequence number, count, job name]
-- Returns 0, or 1 when the chunk had been written already: the elements just pushed (the last
-- ARGV[4] of the list: nothing runs between them and this script) are taken off again.
if chunk_sent(KEYS[5], ARGV[5], ARGV[2]) then
  rcall('LTRIM', KEYS[4], 0, -1 - tonumber(ARGV[4]))
  return 1
end
raise_mark(KEYS[1], ARGV[1], ARGV[2])
local extra = tonumber(ARGV[3])
if rcall('LLEN', KEYS[4]) == tonumber(ARGV[4]) then
  -- The list was empty: whatever count is left belongs to no run.
  if extra > 0 then rcall('SET', KEYS[3], extra) else rcall('DEL', KEYS[3]) end
elseif extra > 0 then
  -- SET, not INCRBY: a count that is not a number (not fastjobs') must not fail the write.
  rcall('SET', KEYS[3], (tonumber(rcall('GET', KEYS[3]) or '0') or 0) + extra)
end
local base = ssub(KEYS[2], 1, -6)
local cap = events_on(base)
if cap then rcall('XADD', base .. ':events', 'MAXLEN', '~', cap, '*', 'e', 'waiting', 'r', ARGV[6]) end
wake(KEYS[2])
return 0
