-- push: append ready records to a queue: a few jobs, or records with priorities (the bulk
-- path for records all of priority 0 is a raw RPUSH plus mark.lua in one MULTI/EXEC: see
-- redis_store.rs).
-- KEYS[1] wait list   KEYS[2] wake list   KEYS[3] producer high-water-mark string
-- ARGV[1] queue key base ("fj:{q}")
-- ARGV[2] highest sequence number among the records (the producer's high-water mark)
-- ARGV[3] ttl of the high-water mark, seconds
-- ARGV[4..] packed job records (see codec.rs), already carrying their ids
-- Returns the number of records pushed.
for i = 4, #ARGV do rcall('RPUSH', ready_key(ARGV[1], ARGV[i]), ARGV[i]) end
local known = tonumber(rcall('GET', KEYS[3]) or '-1')
if tonumber(ARGV[2]) > known then
  rcall('SET', KEYS[3], ARGV[2], 'EX', ARGV[3])
else
  rcall('EXPIRE', KEYS[3], ARGV[3])
end
wake(KEYS[2])
return #ARGV - 3
