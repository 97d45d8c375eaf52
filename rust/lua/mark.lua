-- mark: the bookkeeping of a fast-path push, run by EVAL (source, never NOSCRIPT) inside the
-- same MULTI/EXEC as the RPUSH of the records, so both apply together.
-- KEYS[1] producer high-water mark   KEYS[2] wake list   KEYS[3] runs counter (common.lua)
-- KEYS[4] wait list
-- ARGV[1] highest sequence number pushed   ARGV[2] ttl of the mark, seconds
-- ARGV[3] records pushed beyond one per list element (in runs)   ARGV[4] elements pushed
raise_mark(KEYS[1], ARGV[1], ARGV[2])
local extra = tonumber(ARGV[3])
if rcall('LLEN', KEYS[4]) == tonumber(ARGV[4]) then
  -- The list was empty: whatever count is left belongs to no run.
  if extra > 0 then rcall('SET', KEYS[3], extra) else rcall('DEL', KEYS[3]) end
elseif extra > 0 then
  rcall('INCRBY', KEYS[3], extra)
end
wake(KEYS[2])
return 0
