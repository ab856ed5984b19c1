-- snapshot.lua: a feed's items in order with its epoch and revision, read
-- atomically, whole or one page of it. A feed that does not exist reads as
-- epoch 0, revision 0, no items; so does one without an epoch yet (written
-- only by classic peers).
-- KEYS[1..8] the feed's keys, in the prelude's order (see publish.lua)
-- ARGV[1] optional: the rank of the first id to read (0-based; default 0)
-- ARGV[2] optional: at most this many ids (default 0: all). A large feed is
--         read in pages so that no call blocks Redis for long.
-- ARGV[3..6] optional: epoch, rev, total and publishes as the first page
--         replied; the page is read only when the feed is still there
-- Reply: { epoch, rev, ids, items, item revs, total, publishes } (items:
--        JSON text, or nil for an id without a value; item revs: '0' when
--        unknown; total: ids in the feed; publishes: feed.publishes:N)
-- Errors: FEEDTYPE <type> (the name holds a queue or job), CHANGED (the feed
--         changed since the pinned page: read again from the first page),
--         BADARG, BADKEYS
return run(function()
  local first, count = tonumber(ARGV[1] or '0'), tonumber(ARGV[2] or '0')
  if not first or not count or first < 0 or count < 0 then
    fail('BADARG', 'first and count must be whole numbers >= 0')
  end
  local pin
  if ARGV[3] and ARGV[3] ~= '' then pin = { ARGV[3], ARGV[4], ARGV[5], ARGV[6] } end
  return snapshot_reply(read_feed(feed_at(KEYS, 1)), first, count, pin)
end)
