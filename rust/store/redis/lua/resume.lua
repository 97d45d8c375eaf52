-- resume: a paused queue runs again; its workers hear of it at once and reserve.
-- KEYS[1] paused marker   KEYS[2] wake list
-- ARGV[1] control channel
-- Returns 1 if the queue was paused, 0 if it was running.
if rcall('DEL', KEYS[1]) == 0 then return 0 end
wake(KEYS[2])
rcall('PUBLISH', ARGV[1], 'resume')
return 1
