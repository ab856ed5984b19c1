-- job_finish.lua: finishes a job: removes it from the queue, stores its
-- outcome in the ledger and publishes it on job.finish:N as "id\0outcome"
-- (always with the NUL). Given the claim time its worker got from the claim,
-- only that claim can finish the job: a worker whose claim timed out (the
-- job is available again, or claimed again since) records nothing, so its
-- outcome can never disagree with what the next claim applies. Without a
-- claim time (a foreign worker), a job that is claimed, or available again
-- after a claim timeout, can be finished. The first stored outcome wins.
-- KEYS[1..10] the queue's keys (see job_submit.lua)
-- KEYS[11] job.ledger:<byte length of N>:N:<id> (see docs/JOBS.md)
-- ARGV[1] job id
-- ARGV[2] outcome JSON
-- ARGV[3] ledger retention in milliseconds
-- ARGV[4] 'next' to also claim the next available job, as job_claim.lua
--         does (saves a worker a round trip); absent or '' otherwise
-- ARGV[5] the claim time job_claim.lua returned (as job_fail.lua takes it),
--         or absent / '' to finish whatever claim holds the job
-- Reply: { 'finished', outcome JSON as stored } | { 'gone' } (retracted,
--        finished already, or no longer held by the given claim); with 'next' and a job available, followed by
--        that job as job_claim.lua replies it (id, payload, failures,
--        claim time, ids still available)
local id, outcome, ttl, claim_next = ARGV[1], ARGV[2], ARGV[3], ARGV[4] == 'next'
local claimed_at = ARGV[5] or ''
local name = string.sub(KEYS[1], 13)
local t = redis.call('TIME')
local now = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))

-- The next available job, claimed, appended to `reply`.
local function with_next(reply)
  if not claim_next then return reply end
  for _ = 1, 16 do
    local next_id = redis.call('RPOP', KEYS[2])
    if not next_id then return reply end
    local payload = redis.call('HGET', KEYS[3], next_id)
    if payload then
      redis.call('ZADD', KEYS[5], now, next_id)
      reply[#reply + 1] = next_id
      reply[#reply + 1] = payload
      reply[#reply + 1] = redis.call('HGET', KEYS[6], next_id) or '0'
      reply[#reply + 1] = now
      reply[#reply + 1] = redis.call('LLEN', KEYS[2])
      return reply
    end
  end
  return reply
end

-- A claimed job is not in feed.ids:N (a stray copy there is dropped by the
-- claim, which finds no payload), so only an unclaimed one is looked up and
-- removed from the list: LPOS and LREM scan it.
local claimed = redis.call('ZSCORE', KEYS[5], id)
if claimed_at ~= '' and (not claimed or tonumber(claimed) ~= tonumber(claimed_at)) then
  return with_next({ 'gone' })
end
if not claimed and not redis.call('LPOS', KEYS[2], id) then
  return with_next({ 'gone' })
end
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
return with_next({ 'finished', outcome })
