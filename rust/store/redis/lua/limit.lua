-- limit: set or clear the limits of a queue, applied by reserve.lua across every worker.
-- KEYS[1] limit hash   KEYS[2] wake   KEYS[3] the rate limit's window counter
-- ARGV[1] jobs per window ('' for no rate limit)   ARGV[2] window ms
-- ARGV[3] most jobs leased at once ('' for no concurrency limit)   ARGV[4] control channel
-- Returns 1. Workers hear of it at once (control channel) and reserve again.
rcall('DEL', KEYS[1], KEYS[3])
if ARGV[1] ~= '' then rcall('HSET', KEYS[1], 'max', ARGV[1], 'period', ARGV[2]) end
if ARGV[3] ~= '' then rcall('HSET', KEYS[1], 'concurrency', ARGV[3]) end
wake(KEYS[2])
rcall('PUBLISH', ARGV[4], 'limit')
return 1
