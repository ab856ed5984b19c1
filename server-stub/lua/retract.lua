-- retract.lua: removes an item from a feed.
-- KEYS[1..8] the feed's keys, in the prelude's order (see publish.lua)
-- ARGV[1] item id
-- ARGV[2] the id of the job that causes the change, or ''
-- Reply: { epoch, rev, id, 'retract' }
-- Errors: NOFEED, FEEDTYPE <type>, NOITEM, BADNAME, BADKEYS
return run(function()
  local f = feed_at(KEYS, 1)
  local p = check_retract(f, ARGV[1], ARGV[2])
  apply_retract(p)
  flush()
  return { f.epoch_text, f.rev_text, ARGV[1], 'retract' }
end)
