-- mark: the bookkeeping of a fast-path push, run by EVAL (source, never NOSCRIPT) inside the
-- same MULTI/EXEC as the RPUSH of the records, so both apply together.
-- KEYS[1] producer high-water mark   KEYS[2] wake list   KEYS[3] runs counter (common.lua)
-- ARGV[1] highest sequence number pushed   ARGV[2] ttl of the mark, seconds
-- ARGV[3] records pushed beyond one per list element (in runs)
local known = tonumber(rcall('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) > known then
  rcall('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
else
  rcall('EXPIRE', KEYS[1], ARGV[2])
end
if tonumber(ARGV[3]) > 0 then rcall('INCRBY', KEYS[3], ARGV[3]) end
wake(KEYS[2])
return 0
