-- mark: the bookkeeping of a fast-path push, run by EVAL (source, never NOSCRIPT) inside the
-- same MULTI/EXEC as the RPUSH of the records, so both apply together.
-- KEYS[1] producer high-water mark   KEYS[2] wake list
-- ARGV[1] highest sequence number pushed   ARGV[2] ttl of the mark, seconds
local known = tonumber(rcall('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) > known then
  rcall('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
else
  rcall('EXPIRE', KEYS[1], ARGV[2])
end
wake(KEYS[2])
return 0
