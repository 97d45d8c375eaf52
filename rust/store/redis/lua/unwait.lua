-- unwait: drop one waiter registration (its wait timed out or was cancelled).
-- KEYS[1] waiters hash   ARGV[1] job id
if rcall('HINCRBY', KEYS[1], ARGV[1], -1) <= 0 then rcall('HDEL', KEYS[1], ARGV[1]) end
return 0
