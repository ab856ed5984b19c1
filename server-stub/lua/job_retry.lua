-- job_retry.lua: puts a stalled job back at the end of the queue with a
-- fresh failure count. Only a stalled job (classic retry would re-add any id).
-- KEYS[1..10] the queue's keys (see job_submit.lua)
-- ARGV[1] job id
-- Reply: 1
-- Errors: NOTSTALLED (the job is not stalled), NOJOB (its payload is gone)
local id = ARGV[1]
local name = string.sub(KEYS[1], 13)
if redis.call('SISMEMBER', KEYS[7], id) == 0 then
  return redis.error_reply('NOTSTALLED ' .. id)
end
if redis.call('HEXISTS', KEYS[3], id) == 0 then
  return redis.error_reply('NOJOB ' .. id)
end
local t = redis.call('TIME')
local now = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
redis.call('SREM', KEYS[7], id)
redis.call('HDEL', KEYS[6], id)
redis.call('LPUSH', KEYS[2], id)
redis.call('ZADD', KEYS[4], now, id)
redis.call('PUBLISH', 'job.put:' .. name, id)
return 1
