-- job_sweep.lua: claim timeouts. Every job claimed longer ago than the
-- timeout counts a failure and goes back to the end of the queue, or past
-- max retries is stalled, as job_fail.lua does. One script run is atomic,
-- so any number of processes may sweep the same queue at once.
-- KEYS[1..10] the queue's keys (see job_submit.lua)
-- ARGV[1] claim timeout in milliseconds
-- ARGV[2] max retries
-- ARGV[3] at most this many jobs per run
-- Reply: { requeued ids, stalled ids }
local timeout, max, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local name = string.sub(KEYS[1], 13)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', string.format('%.0f', now - timeout), 'LIMIT', 0, limit)
local requeued, stalled = {}, {}
local err = 'claim timed out after ' .. ARGV[1] .. ' ms'
for i = 1, #expired do
  local id = expired[i]
  local failures = redis.call('HINCRBY', KEYS[6], id, 1)
  redis.call('ZREM', KEYS[5], id)
  redis.call('HSET', KEYS[10], id, cjson.encode({ error = err, failures = failures, at = now }))
  if failures > max then
    redis.call('HDEL', KEYS[6], id)
    redis.call('ZREM', KEYS[4], id)
    redis.call('SADD', KEYS[7], id)
    stalled[#stalled + 1] = id
  else
    redis.call('LPUSH', KEYS[2], id)
    requeued[#requeued + 1] = id
  end
end
if #requeued > 0 then
  redis.call('PUBLISH', 'job.put:' .. name, requeued[1])
end
return { requeued, stalled }
