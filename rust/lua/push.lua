-- push: append ready records to a queue (the fast path of dispatch and bulk dispatch).
-- KEYS[1] wait list   KEYS[2] wake list   KEYS[3] producer high-water-mark string
-- ARGV[1] queue key base ("fj:{q}")
-- ARGV[2] highest sequence number among the records (the producer's high-water mark)
-- ARGV[3] ttl of the high-water mark, seconds
-- ARGV[4] '1' when every record has priority 0 (one list, pushed in slices)
-- ARGV[5..] packed job records (see codec.rs), already carrying their ids
-- Returns the number of records pushed.
local n = #ARGV
if ARGV[4] == '1' then
  -- unpack() is bounded by Lua's C stack, so push in slices.
  for i = 5, n, 4000 do
    rcall('RPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 3999, n)))
  end
else
  for i = 5, n do rcall('RPUSH', ready_key(ARGV[1], ARGV[i]), ARGV[i]) end
end
local known = tonumber(rcall('GET', KEYS[3]) or '-1')
if tonumber(ARGV[2]) > known then
  rcall('SET', KEYS[3], ARGV[2], 'EX', ARGV[3])
else
  rcall('EXPIRE', KEYS[3], ARGV[3])
end
wake(KEYS[2])
return n - 4
