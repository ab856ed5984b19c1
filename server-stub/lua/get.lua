-- get.lua: one item with the revision of its last change.
-- KEYS[1..8] the feed's keys, in the prelude's order (see publish.lua)
-- ARGV[1] item id
-- Reply: { epoch, rev, item (JSON text, or nil when absent), item rev ('0' when unknown) }
-- Errors: NOFEED, FEEDTYPE <type>, BADKEYS
return run(function()
  local f = check_feed(feed_at(KEYS, 1))
  local epoch, rev = f.epoch or 0, f.rev
  if f.reset_history then epoch, rev = 0, 0 end
  local item = redis.call('HGET', f.items, ARGV[1])
  local item_rev = '0'
  if item and not f.reset_history then
    item_rev = redis.call('HGET', f.itemrevs, ARGV[1]) or '0'
  end
  return { num(epoch), num(rev), item, item_rev }
end)
