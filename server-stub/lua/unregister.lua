-- unregister.lua: removes a feed from the registry and announces it, as
-- classic delete does. Runs after delete.lua; never shares a script with
-- a feed's keys, so that it works on Redis Cluster.
-- KEYS[1] feeds
-- ARGV[1] feed name
-- ARGV[2] instance id of this process
-- Publishes: delfeed "name\0instance" when it was registered
-- Reply: 1 when removed, else 0
local removed = redis.call('SREM', KEYS[1], ARGV[1])
if removed == 1 then
  redis.call('PUBLISH', 'delfeed', ARGV[1] .. '\0' .. ARGV[2])
end
return removed
