-- edit.lua: replaces the value of an existing item. A time-ordered feed
-- also moves the item to the end (its score becomes now), as classic does.
-- KEYS[1..8] the feed's keys, in the prelude's order (see publish.lua)
-- ARGV[1] item id
-- ARGV[2] the new item, strict JSON text (not re-parsed: embedded as is in the notice)
-- ARGV[3] the id of the job that causes the change, or ''
-- Reply: { epoch, rev, id, 'edit' }
-- Errors: NOFEED, FEEDTYPE <type>, NOITEM, BADARG, BADNAME, BADKEYS
return run(function()
  local f = feed_at(KEYS, 1)
  local p = check_publish(f, 'edit', ARGV[1], '', ARGV[2], '', '', ARGV[3])
  local _, id, op = apply_publish(p)
  flush()
  return { f.epoch_text, f.rev_text, id, op }
end)
