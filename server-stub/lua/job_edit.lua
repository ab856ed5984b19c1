-- job_edit.lua: replaces the payload of a job that is not in flight
-- (available or stalled), e.g. an administrator's fix before a retry.
-- KEYS[1..10] the queue's keys (see job_submit.lua)
-- ARGV[1] job id
-- ARGV[2] the new payload
-- Reply: 1
-- Errors: NOJOB (no such job), CLAIMED (a worker is on it; try again later)
local id = ARGV[1]
if redis.call('HEXISTS', KEYS[3], id) == 0 then
  return redis.error_reply('NOJOB ' .. id)
end
if redis.call('ZSCORE', KEYS[5], id) then
  return redis.error_reply('CLAIMED ' .. id)
end
redis.call('HSET', KEYS[3], id, ARGV[2])
return 1
