-- job_claim.lua: takes the next available job and marks it claimed in one
-- step, so no job is lost between pop and claim (classic BRPOP-then-MULTI
-- could). Ids whose payload is gone (left by a foreign retract) are dropped.
-- KEYS[1..10] the queue's keys (see job_submit.lua)
-- ARGV: none
-- Reply: nil when no job is available, else { id, payload, failure count,
--        claim time (ms; job_fail.lua takes it to fail only its own claim),
--        number of ids still available }
local t = redis.call('TIME')
local now = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
for _ = 1, 16 do
  local id = redis.call('RPOP', KEYS[2])
  if not id then return false end
  local payload = redis.call('HGET', KEYS[3], id)
  if payload then
    redis.call('ZADD', KEYS[5], now, id)
    local failures = redis.call('HGET', KEYS[6], id) or '0'
    return { id, payload, failures, now, redis.call('LLEN', KEYS[2]) }
  end
end
return false
