-- client_claim.lua: binds a client id to the user who says hello with it, so
-- that nobody else can take its change ids or receive its outcomes. Run at
-- every hello, and by each gateway for the client ids of its live sessions
-- well within the expiry, so the binding holds while any session uses it.
-- KEYS[1] client.owner:<client id>
-- ARGV[1] the user
-- ARGV[2] how long the binding lasts without a hello or refresh, in milliseconds
-- Reply: 1 when the id is (now) this user's, 0 when another user holds it.
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
