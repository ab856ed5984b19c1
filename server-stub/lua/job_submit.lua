-- job_submit.lua: puts a job on a thoonk job queue unless its id was seen
-- before (the exactly-once ledger). Self-contained: a foreign process may run
-- it with EVAL (see docs/JOBS.md).
-- KEYS[1..10] the queue's keys, in this order (every job_*.lua takes them so):
--   feed.config:N feed.ids:N feed.items:N feed.published:N feed.claimed:N
--   feed.cancelled:N feed.stalled:N feed.publishes:N feed.finishes:N job.errors:N
-- KEYS[11] job.ledger:<byte length of N>:N:<id> (see docs/JOBS.md)
-- ARGV[1] job id
-- ARGV[2] job payload (JSON, see docs/JOBS.md)
-- ARGV[3] the submitting user
-- ARGV[4] 'high' to be served next, anything else for the back of the queue
-- ARGV[5] ledger retention in milliseconds
-- Reply: { 'queued' } | { 'already_queued' } | { 'finished', outcome JSON }
--        (a job put again after its payload was lost replies 'queued')
-- Errors: NOQUEUE <type or missing> (N is not a job queue),
--         WRONGUSER <owner> (the id was submitted by another user: its
--         ledger record, or the payload of the job still queued, names them)
local id, payload, user, priority, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local name = string.sub(KEYS[1], 13)
local kind = redis.call('HGET', KEYS[1], 'type')
if kind ~= 'job' then
  return redis.error_reply('NOQUEUE ' .. (kind or 'missing'))
end
local seen = redis.call('HMGET', KEYS[11], 'user', 'outcome')
if seen[1] and seen[1] ~= user then
  return redis.error_reply('WRONGUSER ' .. seen[1])
end
if seen[2] then
  return { 'finished', seen[2] }
end
-- Queued before and still on the queue: nothing to do. A ledger record whose
-- job is gone without an outcome (its payload deleted by something other
-- than these scripts) is put again, so that the change is not lost. A job
-- still queued whose ledger record is gone (expired while it waited) is
-- checked against the user its payload names instead.
local queued = redis.call('HGET', KEYS[3], id)
if queued then
  if not seen[1] then
    local ok, job = pcall(cjson.decode, queued)
    local owner = ok and type(job) == 'table' and job.user
    if type(owner) == 'string' and owner ~= user then
      return redis.error_reply('WRONGUSER ' .. owner)
    end
  end
  return { 'already_queued' }
end
local t = redis.call('TIME')
local now = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
if priority == 'high' then
  redis.call('RPUSH', KEYS[2], id)
else
  redis.call('LPUSH', KEYS[2], id)
end
redis.call('HSET', KEYS[3], id, payload)
redis.call('ZADD', KEYS[4], now, id)
redis.call('INCR', KEYS[8])
redis.call('HSET', KEYS[11], 'user', user, 'state', 'queued', 'put', now)
redis.call('PEXPIRE', KEYS[11], ttl)
redis.call('PUBLISH', 'job.put:' .. name, id)
return { 'queued' }
