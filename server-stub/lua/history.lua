-- history.lua: a page of a feed's change log.
-- KEYS[1..8] the feed's keys, in the prelude's order (see publish.lua)
-- ARGV[1] return entries after this revision
-- ARGV[2] at most this many entries
-- Reply: { epoch, rev, oldest retained rev ('0' for an empty log), log entries }
-- Errors: NOFEED, FEEDTYPE <type>, BADARG, BADKEYS
return run(function()
  local f = check_feed(feed_at(KEYS, 1))
  local after, count = tonumber(ARGV[1]), tonumber(ARGV[2])
  if not after or not count or after < 0 or count < 1 then
    fail('BADARG', 'after must be >= 0 and count >= 1')
  end
  if f.reset_history then
    return { '0', '0', '0', {} }
  end
  -- Revisions stay below 2^53: nothing follows a larger `after` (whose
  -- stream id Lua's doubles could not even spell), and no page is longer
  -- than a log can be.
  if after >= f.rev then
    return { num(f.epoch), num(f.rev), num(oldest_logged(f) or 0), {} }
  end
  count = math.min(count, f.rev - after)
  local entries = redis.call('XRANGE', f.log, num(after + 1) .. '-0', '+', 'COUNT', num(count))
  return { num(f.epoch), num(f.rev), num(oldest_logged(f) or 0), entries }
end)
