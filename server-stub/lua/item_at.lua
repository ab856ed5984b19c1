-- item_at.lua: an item's value as of a revision still in the change log,
-- rebuilt from the current value and the `prev` of newer log entries.
-- KEYS[1..8] the feed's keys, in the prelude's order (see publish.lua)
-- ARGV[1] item id
-- ARGV[2] the revision
-- Reply: { epoch, rev, item (JSON text, or nil when the item did not exist then) }
-- Errors: NOFEED, FEEDTYPE <type>, FUTURE (revision after the feed's),
--         GONE <oldest retained rev> (the log no longer reaches back), BADARG, BADKEYS
return run(function()
  local f = check_feed(feed_at(KEYS, 1))
  local id, at = ARGV[1], tonumber(ARGV[2])
  if not at or at < 0 then fail('BADARG', 'revision must be a whole number') end
  if at > f.rev then
    fail('FUTURE', 'revision ' .. num(at) .. ' is after the feed revision ' .. num(f.rev))
  end
  local epoch = num(f.epoch or 0)
  local value = redis.call('HGET', f.items, id)
  if at == f.rev then return { epoch, num(f.rev), value } end
  if value and (tonumber(redis.call('HGET', f.itemrevs, id)) or 0) <= at and not f.new_epoch then
    return { epoch, num(f.rev), value }
  end
  local oldest = oldest_logged(f)
  if f.new_epoch or not oldest or oldest > at + 1 then
    fail('GONE', num(oldest or (f.rev + 1)))
  end
  local newer = redis.call('XREVRANGE', f.log, '+', num(at + 1) .. '-0')
  for i = 1, #newer do
    local fields = newer[i][2]
    local e = {}
    for j = 1, #fields, 2 do e[fields[j]] = fields[j + 1] end
    if e.id == id then
      if e.op == 'publish' then
        value = false
      elseif e.op == 'edit' or e.op == 'retract' then
        value = e.prev or false
      end
    end
  end
  return { epoch, num(f.rev), value }
end)
