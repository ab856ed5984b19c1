-- config.lua: changes a feed's settings and announces it on conffeed.
-- Lowering max_length trims the oldest items at once (each trim is a
-- retract with its own revision); setting retention trims the change log to
-- exactly that many entries (writes trim it approximately).
-- KEYS[1..8] the feed's keys, in the prelude's order (see publish.lua)
-- ARGV[1] instance id of this process
-- ARGV[2] max_length, or '' to keep it (0 = unbounded; type feed only)
-- ARGV[3] retention (change-log entries kept, >= 1), or '' to keep it
-- Publishes: feed.retract:N and feed.changes:N per trimmed item, then
--            conffeed "name\0instance"
-- Reply: { epoch, rev }
-- Errors: NOFEED, FEEDTYPE <type>, BADARG, BADKEYS
return run(function()
  local f = check_feed(feed_at(KEYS, 1))
  local max_length, retention = ARGV[2], ARGV[3]
  if max_length ~= '' then
    if f.type ~= 'feed' then
      fail('BADARG', 'max_length applies to time-ordered feeds (type feed) only')
    end
    if not string.match(max_length, '^%d+$') then
      fail('BADARG', 'max_length must be a whole number, not ' .. max_length)
    end
    f.max_length = tonumber(max_length)
  end
  if retention ~= '' then
    if not string.match(retention, '^%d+$') or tonumber(retention) < 1 then
      fail('BADARG', 'retention must be a whole number >= 1, not ' .. retention)
    end
    f.retention = tonumber(retention)
  end
  local trims = check_trim(f, 0, nil)
  local cfg = { 'HSET', f.config }
  if max_length ~= '' then cfg[#cfg + 1] = 'max_length'; cfg[#cfg + 1] = max_length end
  if retention ~= '' then cfg[#cfg + 1] = 'retention'; cfg[#cfg + 1] = retention end
  if #cfg > 2 then redis.call(unpack(cfg)) end
  apply_trims(f, trims, nil)
  if retention ~= '' then
    redis.call('XTRIM', f.log, 'MAXLEN', '=', f.retention)
  end
  queue('conffeed', f.name .. '\0' .. ARGV[1])
  flush()
  return { num(f.epoch or 0), num(f.rev) }
end)
