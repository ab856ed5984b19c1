-- epoch.lua: starts a new epoch of a feed whose epoch began in another
-- Redis process, keeping its items and revision (the next change gets the
-- next revision, under the new epoch). For a Redis that restarted without
-- `appendfsync always`: it may have lost writes it acknowledged, whose
-- revisions new writes would reuse; clients of the old epoch start over
-- from a snapshot instead. Each epoch records the process it began in
-- (config field `epoch_run`, INFO's run_id), so a second call does nothing.
-- KEYS[1..8] the feed's keys, in the prelude's order (see publish.lua)
-- Reply: 1 when a new epoch began, else 0 (no such feed, not a feed or
--        sorted feed, no epoch yet, or an epoch of this process)
-- Errors: BADKEYS
return run(function()
  local f = read_feed(feed_at(KEYS, 1))
  if (f.type ~= 'feed' and f.type ~= 'sorted_feed') or f.new_epoch or not f.epoch then
    return 0
  end
  if redis.call('HGET', f.config, 'epoch_run') == run_id() then
    return 0
  end
  f.new_epoch = true
  begin_writes(f)
  return 1
end)
