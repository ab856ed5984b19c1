-- job_submit_batch.lua: puts one client's changes to one feed, in order, as
-- one batch job, each change checked against the exactly-once ledger.
-- Self-contained (no prelude). Each change is, in order:
--   finished: its ledger record holds an outcome (nothing is queued); the
--     new changes after it are deferred (the client learns the outcome
--     first, as one change at a time would: an accepted one lifts the base
--     of its later changes to the same item, a conflict holds them back);
--   already_queued: a job holding it is still on the queue; the new changes
--     after it are deferred (they must not overtake it);
--   queued: new (or its job is gone without an outcome) and no change
--     before it in the call was finished or queued: put into the batch job
--     with the other such changes;
--   deferred: not queued and no ledger record written; the client sends it
--     again once the changes before it have their outcomes.
-- KEYS[1..10] the queue's keys (see job_submit.lua)
-- KEYS[11..10+n] job.ledger:<byte length of N>:N:<change id> of each change
-- ARGV[1] the submitting user
-- ARGV[2] 'high' to be served next, anything else for the back of the queue
-- ARGV[3] ledger retention in milliseconds
-- ARGV[4] n, then per change: its id, its job payload JSON (see docs/JOBS.md)
-- Reply: { batch job id or '', then per change: state, outcome JSON or '' }
--   with state one of 'queued', 'already_queued', 'finished', 'deferred'.
--   The batch job's id is 'batch:<id of its first change>'; its payload is
--   {"id": <job id>, "user": <user>, "batch": [<payload of each change>]}.
-- Errors: NOQUEUE <type or missing>, WRONGUSER <owner> (a change's ledger
--   record names another user; nothing is queued)
local user, priority, ttl, n = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local name = string.sub(KEYS[1], 13)
local kind = redis.call('HGET', KEYS[1], 'type')
if kind ~= 'job' then
  return redis.error_reply('NOQUEUE ' .. (kind or 'missing'))
end
if not n or #KEYS ~= 10 + n or #ARGV ~= 4 + 2 * n then
  return redis.error_reply('BADARG expected n ledger keys and an id and a payload per change')
end

-- Checks: the state of every change, before any write.
local states, outcomes, chosen = {}, {}, {}
local stopped, blocked = false, false
for i = 1, n do
  local id = ARGV[3 + 2 * i]
  local seen = redis.call('HMGET', KEYS[10 + i], 'user', 'outcome', 'job')
  if seen[1] and seen[1] ~= user then
    return redis.error_reply('WRONGUSER ' .. seen[1])
  end
  outcomes[i] = ''
  if stopped then
    states[i] = 'deferred'
  elseif seen[2] then
    states[i], outcomes[i] = 'finished', seen[2]
    blocked = true
    if string.find(seen[2], '"status":"conflict"', 1, true) then stopped = true end
  else
    local queued = false
    if seen[1] then
      queued = redis.call('HEXISTS', KEYS[3], seen[3] or id) == 1
    else
      local payload = redis.call('HGET', KEYS[3], id)
      if payload then
        local ok, job = pcall(cjson.decode, payload)
        local owner = ok and type(job) == 'table' and job.user
        if type(owner) == 'string' and owner ~= user then
          return redis.error_reply('WRONGUSER ' .. owner)
        end
        queued = true
      end
    end
    if queued then
      states[i] = 'already_queued'
      blocked = true
    elseif blocked then
      states[i] = 'deferred'
    else
      states[i] = 'queued'
      chosen[#chosen + 1] = i
    end
  end
end

-- Writes: the batch job and the ledger records of its changes.
local job = ''
if #chosen > 0 then
  job = 'batch:' .. ARGV[3 + 2 * chosen[1]]
  local t = redis.call('TIME')
  local now = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
  local parts = {}
  for k, i in ipairs(chosen) do
    parts[k] = ARGV[4 + 2 * i]
    redis.call('HSET', KEYS[10 + i], 'user', user, 'state', 'queued', 'put', now, 'job', job)
    redis.call('PEXPIRE', KEYS[10 + i], ttl)
  end
  local payload = '{"id":' .. cjson.encode(job) .. ',"user":' .. cjson.encode(user)
    .. ',"batch":[' .. table.concat(parts, ',') .. ']}'
  if priority == 'high' then
    redis.call('RPUSH', KEYS[2], job)
  else
    redis.call('LPUSH', KEYS[2], job)
  end
  redis.call('HSET', KEYS[3], job, payload)
  redis.call('ZADD', KEYS[4], now, job)
  redis.call('INCR', KEYS[8])
  redis.call('PUBLISH', 'job.put:' .. name, job)
end
local reply = { job }
for i = 1, n do
  reply[#reply + 1] = states[i]
  reply[#reply + 1] = outcomes[i]
end
return reply
