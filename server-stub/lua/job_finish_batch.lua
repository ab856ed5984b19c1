-- job_finish_batch.lua: finishes a batch job: removes it from the queue,
-- and for each of its changes either stores its outcome in its ledger
-- record, or — a change the batch did not attempt
-- (it came after a conflict) — deletes its ledger record, so that the
-- client's next submit of it queues it again. Given the claim time its
-- worker got, only that claim can finish the job (see job_finish.lua). The
-- first stored outcome of a change wins. The outcomes are published in one
-- message on job.finish:N, "id\0outcome" of each change joined by "\0", in
-- the batch's order (one change's message is job_finish.lua's).
-- KEYS[1..10] the queue's keys (see job_submit.lua)
-- KEYS[11..10+n] job.ledger:<byte length of N>:N:<change id> of each change
-- ARGV[1] the batch job id
-- ARGV[2] ledger retention in milliseconds
-- ARGV[3] the claim time job_claim.lua returned, or '' (any claim)
-- ARGV[4] n, then per change: its id, its outcome JSON or '' (not attempted)
-- Reply: { 'finished' } | { 'gone' } (retracted, finished already, or no
--   longer held by the given claim: nothing is recorded)
local job, ttl, claimed_at, n = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local name = string.sub(KEYS[1], 13)
if not n or #KEYS ~= 10 + n or #ARGV ~= 4 + 2 * n then
  return redis.error_reply('BADARG expected n ledger keys and an id and an outcome per change')
end
local claimed = redis.call('ZSCORE', KEYS[5], job)
if claimed_at ~= '' and (not claimed or tonumber(claimed) ~= tonumber(claimed_at)) then
  return { 'gone' }
end
if not claimed and not redis.call('LPOS', KEYS[2], job) then
  return { 'gone' }
end
local t = redis.call('TIME')
local now = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
if claimed then
  redis.call('ZREM', KEYS[5], job)
else
  redis.call('LREM', KEYS[2], 0, job)
end
redis.call('HDEL', KEYS[6], job)
redis.call('HDEL', KEYS[10], job)
redis.call('ZREM', KEYS[4], job)
redis.call('HDEL', KEYS[3], job)
redis.call('INCR', KEYS[9])
local finished = {}
for i = 1, n do
  local id, outcome = ARGV[3 + 2 * i], ARGV[4 + 2 * i]
  local ledger = KEYS[10 + i]
  local record = redis.call('HMGET', ledger, 'outcome', 'job')
  if record[1] then
    finished[#finished + 1] = id .. '\0' .. record[1]
  elseif outcome == '' then
    -- Not attempted: forget it, unless another job holds it now.
    if record[2] == job then redis.call('DEL', ledger) end
  else
    redis.call('HSET', ledger, 'state', 'finished', 'outcome', outcome, 'finished', now)
    redis.call('PEXPIRE', ledger, ttl)
    finished[#finished + 1] = id .. '\0' .. outcome
  end
end
if #finished > 0 then
  redis.call('PUBLISH', 'job.finish:' .. name, table.concat(finished, '\0'))
end
return { 'finished' }
