-- push: append ready records to a queue (the fast path of dispatch and bulk dispatch).
-- KEYS[1] wait list      KEYS[2] wake list      KEYS[3] producer high-water-mark string
-- ARGV[1] highest sequence number among the records (the producer's high-water mark)
-- ARGV[2] ttl of the high-water mark, seconds
-- ARGV[3..] packed job records (see codec.rs), already carrying their ids
-- Returns the wait list length after the push.
local n = #ARGV
local len = 0
-- unpack() is bounded by Lua's C stack, so push in slices.
for i = 3, n, 4000 do
  len = redis.call('RPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 3999, n)))
end
local hwm = tonumber(ARGV[1])
local known = tonumber(redis.call('GET', KEYS[3]) or '-1')
if hwm > known then
  redis.call('SET', KEYS[3], ARGV[1], 'EX', ARGV[2])
else
  redis.call('EXPIRE', KEYS[3], ARGV[2])
end
-- One marker at most: it wakes one blocked worker, which wakes the next if work remains.
redis.call('LPUSH', KEYS[2], '1')
redis.call('LTRIM', KEYS[2], 0, 0)
return len
