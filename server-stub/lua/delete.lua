-- delete.lua: deletes every key of a feed or sorted feed (classic and
-- extension keys). The registry step, unregister.lua, runs after it. A feed
-- created again later starts a new epoch. Queues and jobs are not deleted
-- here (they have keys of their own).
-- KEYS[1..8] the feed's keys, in the prelude's order (see publish.lua)
-- Reply: 1 when the feed existed (had a config), else 0
-- Errors: FEEDTYPE <type> (a queue or job), BADNAME, BADKEYS
return run(function()
  local f = read_feed(feed_at(KEYS, 1))
  if f.type and f.type ~= 'feed' and f.type ~= 'sorted_feed' then
    fail('FEEDTYPE', f.type)
  end
  redis.call('DEL', f.config, f.ids, f.items, f.publishes, f.idincr, f.rev_key, f.itemrevs, f.log)
  return f.type and 1 or 0
end)
