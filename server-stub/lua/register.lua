-- register.lua: adds a feed to the registry, as classic create does, and
-- announces it. Runs after create.lua; never shares a script with a
-- feed's keys, so that it works on Redis Cluster.
-- KEYS[1] feeds
-- ARGV[1] feed name
-- ARGV[2] instance id of this process
-- ARGV[3] '1' to publish conffeed even when the feed was already registered
-- Publishes: newfeed "name\0instance" when newly added, then
--            conffeed "name\0instance" when newly added or ARGV[3] is '1'
-- Reply: 1 when newly added, else 0
local added = redis.call('SADD', KEYS[1], ARGV[1])
local message = ARGV[1] .. '\0' .. ARGV[2]
if added == 1 then
  redis.call('PUBLISH', 'newfeed', message)
end
if added == 1 or ARGV[3] == '1' then
  redis.call('PUBLISH', 'conffeed', message)
end
return added
