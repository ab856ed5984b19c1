-- job_fail.lua: a claimed job failed (error, panic, or claim timeout seen by
-- its worker): counts the failure (classic feed.cancelled:N) and puts the job
-- back at the end of the queue, or, past the queue's max retries, stalls it
-- (dead letter) with the last error in job.errors:N.
-- KEYS[1..10] the queue's keys (see job_submit.lua)
-- ARGV[1] job id
-- ARGV[2] the error, in words
-- ARGV[3] max retries: failures allowed before the job stalls
-- ARGV[4] the claim time job_claim.lua returned, or '' for any claim: when the
--         job timed out and was claimed again since, this failure is not counted
-- Reply: { 'retry', failures } | { 'stalled', failures }
--      | { 'gone', 0 } (not claimed, or claimed again since)
local id, err, max, claimed_at = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local name = string.sub(KEYS[1], 13)
local score = redis.call('ZSCORE', KEYS[5], id)
if not score or (claimed_at ~= '' and tonumber(score) ~= tonumber(claimed_at)) then
  return { 'gone', 0 }
end
local t = redis.call('TIME')
local now = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
local failures = redis.call('HINCRBY', KEYS[6], id, 1)
redis.call('ZREM', KEYS[5], id)
redis.call('HSET', KEYS[10], id, cjson.encode({ error = err, failures = failures, at = tonumber(now) }))
if failures > max then
  redis.call('HDEL', KEYS[6], id)
  redis.call('ZREM', KEYS[4], id)
  redis.call('SADD', KEYS[7], id)
  return { 'stalled', failures }
end
redis.call('LPUSH', KEYS[2], id)
redis.call('PUBLISH', 'job.put:' .. name, id)
return { 'retry', failures }
