-- since.lua: the changes after a position, or a snapshot when the change
-- log cannot serve them (other epoch, revision ahead of the feed's, log no
-- longer reaching back, or no trusted history).
-- KEYS[1..8] the feed's keys, in the prelude's order (see publish.lua)
-- ARGV[1] the epoch the caller knows
-- ARGV[2] the last revision the caller applied
-- ARGV[3] optional: at most this many log entries, and a reset's snapshot
--         at most this many ids (default 0: all); the caller asks again
--         from the last entry, or reads the rest of the snapshot with
--         snapshot.lua pinned to its first page
-- Reply: { 'changes', epoch, log entries }  (entries as XRANGE returns them)
--      | { 'reset', epoch, rev, ids, items, item revs, total, publishes }
--        (the first page of a snapshot, as snapshot.lua)
-- Writes: only on a Redis Cluster node whose replication history changed
--         since the feed's last write (failover, restart): the new epoch
--         (see read_feed in prelude.lua), so the reply is a snapshot of it.
-- Errors: FEEDTYPE <type>, BADARG, BADKEYS
return run(function()
  local f = read_feed(feed_at(KEYS, 1))
  local from_epoch, from_rev = tonumber(ARGV[1]), tonumber(ARGV[2])
  local page = tonumber(ARGV[3] or '0')
  if not from_epoch or not from_rev or not page then
    fail('BADARG', 'epoch, revision and page size must be numbers')
  end
  -- After a failover or restart of a cluster node the log may hold
  -- revisions its clients never saw, or lack some they did: start the new
  -- epoch now (a write, the only one this script makes) and answer with it.
  if f.history_changed and f.type then begin_writes(f) end
  local epoch = f.epoch or 0
  if f.type and not f.reset_history and epoch == from_epoch and from_rev <= f.rev then
    if from_rev == f.rev then
      return { 'changes', num(epoch), {} }
    end
    local oldest = oldest_logged(f)
    if oldest and oldest <= from_rev + 1 then
      local range = { 'XRANGE', f.log, num(from_rev + 1) .. '-0', '+' }
      if page > 0 then range[5] = 'COUNT'; range[6] = page end
      return { 'changes', num(epoch), redis.call(unpack(range)) }
    end
  end
  local reply = snapshot_reply(f, 0, page)
  table.insert(reply, 1, 'reset')
  return reply
end)
