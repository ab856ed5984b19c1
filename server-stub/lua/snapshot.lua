-- snapshot.lua: a feed's items in order with its epoch and revision, read
-- atomically. A feed that does not exist reads as epoch 0, revision 0, no
-- items; so does one without an epoch yet (written only by classic peers).
-- KEYS[1..8] the feed's keys, in the prelude's order (see publish.lua)
-- Reply: { epoch, rev, ids, items, item revs } (items: JSON text, or nil
--        for an id without a value; item revs: '0' when unknown)
-- Errors: FEEDTYPE <type> (the name holds a queue or job), BADKEYS
return run(function()
  return snapshot_reply(read_feed(feed_at(KEYS, 1)))
end)
