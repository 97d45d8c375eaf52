-- sched_upsert: create or update one schedule (JobScheduler.schedule), idempotent by key.
-- When its timing is unchanged the next run and the run counters stay as they are, so an
-- upsert neither duplicates nor loses a tick; a new timing takes the next run computed by
-- the caller.
-- KEYS[1] next-run zset   KEYS[2] the schedule's definition hash
-- ARGV[1] schedule key   ARGV[2] timing signature   ARGV[3] next run ms if the timing changes
-- ARGV[4] anchor ms (interval schedules) if the timing changes   ARGV[5] wake channel
-- ARGV[6..] field, value pairs of the definition
-- Returns {1 if created else 0, next run ms}.
local now = now_ms()
local old = rcall('HMGET', KEYS[2], 'timing', 'anchor_ms', 'runs', 'last_run_ms', 'last_job_id', 'created_ms')
local score = rcall('ZSCORE', KEYS[1], ARGV[1])
local created = old[6] == false
local same = score and old[1] == ARGV[2]
rcall('DEL', KEYS[2])
local fields = {'timing', ARGV[2], 'updated_ms', now, 'created_ms', old[6] or now,
                'anchor_ms', same and old[2] or ARGV[4], 'runs', old[3] or 0}
if old[4] then fields[#fields + 1] = 'last_run_ms'; fields[#fields + 1] = old[4] end
if old[5] then fields[#fields + 1] = 'last_job_id'; fields[#fields + 1] = old[5] end
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
rcall('HSET', KEYS[2], unpack(fields))
if not same then
  score = ARGV[3]
  rcall('ZADD', KEYS[1], score, ARGV[1])
  rcall('PUBLISH', ARGV[5], score)
end
return {created and 1 or 0, tonumber(score)}
