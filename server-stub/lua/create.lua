-- create.lua: creates a feed's config and starts its first epoch, unless
-- the feed exists. The registry (`feeds` set, newfeed/conffeed events) is
-- a separate step: register.lua, run after this one.
-- KEYS[1..8] the feed's keys, in the prelude's order (see publish.lua)
-- ARGV[1] type: feed | sorted_feed
-- ARGV[2] max_length, or '' (time-ordered feeds only; 0 = unbounded)
-- ARGV[3] retention: change-log entries kept at least (>= 1), or '' for the default
-- Reply: { created (1|0), type, epoch } (the existing type when not created)
-- Errors: BADARG, KEYTYPE (feed.ids:N/feed.items:N hold another Redis type), BADKEYS
return run(function()
  local f = feed_at(KEYS, 1)
  local kind = ARGV[1]
  if kind ~= 'feed' and kind ~= 'sorted_feed' then
    fail('BADARG', 'type must be feed or sorted_feed, not ' .. kind)
  end
  if ARGV[2] ~= '' and kind ~= 'feed' then
    fail('BADARG', 'max_length applies to time-ordered feeds (type feed) only')
  end
  if ARGV[2] ~= '' and not string.match(ARGV[2], '^%d+$') then
    fail('BADARG', 'max_length must be a whole number, not ' .. ARGV[2])
  end
  if ARGV[3] ~= '' and (not string.match(ARGV[3], '^%d+$') or tonumber(ARGV[3]) < 1) then
    fail('BADARG', 'retention must be a whole number >= 1, not ' .. ARGV[3])
  end
  read_feed(f)
  if f.type then
    return { 0, f.type, num(f.epoch or 0) }
  end
  local ids_type = redis.call('TYPE', f.ids).ok
  local want = kind == 'feed' and 'zset' or 'list'
  if ids_type ~= 'none' and ids_type ~= want then
    fail('KEYTYPE', f.ids .. ' holds a ' .. ids_type .. ', not a ' .. want)
  end
  local items_type = redis.call('TYPE', f.items).ok
  if items_type ~= 'none' and items_type ~= 'hash' then
    fail('KEYTYPE', f.items .. ' holds a ' .. items_type .. ', not a hash')
  end
  local cfg = { 'HSET', f.config, 'type', kind }
  if ARGV[2] ~= '' then cfg[#cfg + 1] = 'max_length'; cfg[#cfg + 1] = ARGV[2] end
  if ARGV[3] ~= '' then cfg[#cfg + 1] = 'retention'; cfg[#cfg + 1] = ARGV[3] end
  redis.call(unpack(cfg))
  begin_writes(f)
  return { 1, kind, num(f.epoch) }
end)
