-- job_finish.lua: finishes a job: removes it from the queue, stores its
-- outcome in the ledger and publishes it on job.finish:N as "id\0outcome"
-- (always with the NUL). A job that is claimed, or available again after a
-- claim timeout, can be finished; the first stored outcome wins.
-- KEYS[1..10] the queue's keys (see job_submit.lua)
-- KEYS[11] job.ledger:N:<id>
-- ARGV[1] job id
-- ARGV[2] outcome JSON
-- ARGV[3] ledger retention in milliseconds
-- Reply: { 'finished', outcome JSON as stored } | { 'gone' } (retracted or finished already)
local id, outcome, ttl = ARGV[1], ARGV[2], ARGV[3]
local name = string.sub(KEYS[1], 13)
-- A claimed job is not in feed.ids:N (a stray copy there is dropped by the
-- claim, which finds no payload), so only an unclaimed one is looked up and
-- removed from the list: LPOS and LREM scan it.
local claimed = redis.call('ZSCORE', KEYS[5], id)
if not claimed and not redis.call('LPOS', KEYS[2], id) then
  return { 'gone' }
end
local t = redis.call('TIME')
local now = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
local stored = redis.call('HGET', KEYS[11], 'outcome')
if stored then outcome = stored end
if claimed then
  redis.call('ZREM', KEYS[5], id)
else
  redis.call('LREM', KEYS[2], 0, id)
end
redis.call('HDEL', KEYS[6], id)
redis.call('HDEL', KEYS[10], id)
redis.call('ZREM', KEYS[4], id)
redis.call('HDEL', KEYS[3], id)
redis.call('INCR', KEYS[9])
redis.call('HSET', KEYS[11], 'state', 'finished', 'outcome', outcome, 'finished', now)
redis.call('PEXPIRE', KEYS[11], ttl)
redis.call('PUBLISH', 'job.finish:' .. name, id .. '\0' .. outcome)
return { 'finished', outcome }
