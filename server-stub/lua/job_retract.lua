-- job_retract.lua: removes a job wherever it is (available, claimed or
-- stalled). When the ledger holds the job unfinished, it records the given
-- outcome and publishes it on job.finish:N, so the submitter learns of it.
-- KEYS[1..10] the queue's keys (see job_submit.lua)
-- KEYS[11] job.ledger:<byte length of N>:N:<id> (see docs/JOBS.md)
-- ARGV[1] job id
-- ARGV[2] outcome JSON to record
-- ARGV[3] ledger retention in milliseconds
-- Reply: the state the job was in: available | claimed | stalled | orphaned | none
local id, outcome, ttl = ARGV[1], ARGV[2], ARGV[3]
local name = string.sub(KEYS[1], 13)
local state = 'none'
if redis.call('ZSCORE', KEYS[5], id) then
  state = 'claimed'
elseif redis.call('SISMEMBER', KEYS[7], id) == 1 then
  state = 'stalled'
elseif redis.call('LPOS', KEYS[2], id) then
  state = 'available'
elseif redis.call('HEXISTS', KEYS[3], id) == 1 then
  state = 'orphaned'
end
local ledger = redis.call('HMGET', KEYS[11], 'user', 'outcome')
redis.call('HDEL', KEYS[3], id)
redis.call('HDEL', KEYS[6], id)
redis.call('HDEL', KEYS[10], id)
redis.call('ZREM', KEYS[4], id)
redis.call('SREM', KEYS[7], id)
redis.call('ZREM', KEYS[5], id)
redis.call('LREM', KEYS[2], 0, id)
if ledger[1] and not ledger[2] then
  redis.call('HSET', KEYS[11], 'state', 'finished', 'outcome', outcome)
  redis.call('PEXPIRE', KEYS[11], ttl)
  redis.call('PUBLISH', 'job.finish:' .. name, id .. '\0' .. outcome)
end
return state
