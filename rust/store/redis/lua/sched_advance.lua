-- sched_advance: the second step of firing a tick, after its job was enqueued (under the
-- deterministic id <key>@<tick>, so a repeated first step is refused as a duplicate). Only the
-- driver that finds the tick still pending moves the schedule on: each tick counts once.
-- KEYS[1] next-run zset   KEYS[2] the schedule's definition hash
-- ARGV[1] schedule key   ARGV[2] tick ms   ARGV[3] next run ms, or -1 when the schedule is done
-- ARGV[4] the tick's job id, or '' to put the schedule aside until ARGV[3] without a run (its
-- stored definition cannot be read: drivers try it again then, rather than in a loop)
-- Returns 1 if this call moved the schedule on, 0 if another driver (or an upsert) did.
local score = rcall('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then return 0 end
if ARGV[4] == '' then
  rcall('ZADD', KEYS[1], ARGV[3], ARGV[1])
  return 1
end
if ARGV[3] == '-1' then
  rcall('ZREM', KEYS[1], ARGV[1])
  rcall('DEL', KEYS[2])
  return 1
end
bump(KEYS[2], 'runs', 1)
rcall('HSET', KEYS[2], 'last_run_ms', ARGV[2], 'last_job_id', ARGV[4])
rcall('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
