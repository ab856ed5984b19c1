-- delete.lua: deletes every key of a feed (classic and extension keys).
-- The registry step, unregister.lua, runs after it. A feed created again
-- later starts a new epoch.
-- KEYS[1..8] the feed's keys, in the prelude's order (see publish.lua)
-- Reply: 1 when the feed existed (had a config), else 0
return run(function()
  local f = feed_at(1)
  local existed = redis.call('EXISTS', f.config)
  redis.call('DEL', f.config, f.ids, f.items, f.publishes, f.idincr, f.rev_key, f.itemrevs, f.log)
  return existed
end)
