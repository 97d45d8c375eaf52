-- pause: workers stop taking jobs from the queue (reserve.lua answers `paused` and they hand
-- back what they prefetched); running jobs finish; dispatches are still accepted. The idle
-- slots go, so nothing is handed over, and the workers hear of it at once.
-- KEYS[1] paused marker   KEYS[2] idle zset   KEYS[3] wake list
-- ARGV[1] control channel
-- Returns 1 if the queue was running, 0 if it was paused already.
if rcall('SET', KEYS[1], '1', 'NX') == false then return 0 end
rcall('DEL', KEYS[2], KEYS[3])
rcall('PUBLISH', ARGV[1], 'pause')
return 1
