-- start: record that a handler is about to run an orphaned job (one whose earlier worker died
-- while it may have been running it), before it runs: if this worker dies too, the reaper
-- counts this run (tick.lua). Only orphans are recorded; the reaper counts no other run.
-- KEYS[1] lease hash   KEYS[2] the lease's started hash (job id -> started at ms)
-- ARGV[1] job id
-- Returns 1, or 0 when the lease no longer holds the job (reaped: it is another worker's now).
if rcall('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
rcall('HSET', KEYS[2], ARGV[1], now_ms())
return 1
