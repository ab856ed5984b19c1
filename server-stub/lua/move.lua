-- move.lua: moves an item of a sorted feed to another place.
-- KEYS[1..8] the feed's keys, in the prelude's order (see publish.lua)
-- ARGV[1] item id
-- ARGV[2] position: begin | end | before | after
-- ARGV[3] the reference item id for before/after, else ''
-- ARGV[4] the id of the job that causes the change, or ''
-- Reply: { epoch, rev, id, 'position' }
-- Errors: NOFEED, FEEDTYPE <type> (also for a time-ordered feed), NOITEM,
--         BADPOS, NOREL, BADNAME, BADKEYS
return run(function()
  local f = feed_at(KEYS, 1)
  local p = check_move(f, ARGV[1], ARGV[2], ARGV[3], ARGV[4])
  apply_move(p)
  flush()
  return { f.epoch_text, f.rev_text, ARGV[1], 'position' }
end)
