-- publish.lua: adds an item to a feed, or replaces it when the id exists.
-- KEYS[1..8] the feed's keys, in the prelude's order (feed_at):
--            feed.config:N feed.ids:N feed.items:N feed.publishes:N
--            feed.idincr:N feed.rev:N feed.itemrevs:N feed.log:N
-- ARGV[1] mode: upsert (new id: add; existing id: edit) | insert (id must be new)
-- ARGV[2] item id, or '' to generate one
-- ARGV[3] the id to use when ARGV[2] is '', or '' to take the next
--         INCR feed.idincr:N that is not an item id yet
-- ARGV[4] the item, strict JSON text (not re-parsed: embedded as is in the notice)
-- ARGV[5] position of a new item: '' or end | begin | before | after
--         (a time-ordered feed accepts only '' and end)
-- ARGV[6] the reference item id for before/after, else ''
-- ARGV[7] the id of the job that causes the change, or ''
-- Reply: { epoch, rev, id, op } with op publish | edit
-- Errors: NOFEED, FEEDTYPE <type>, EXISTS, BADPOS, NOREL, BADARG, BADNAME, BADKEYS
return run(function()
  local f = feed_at(KEYS, 1)
  local mode = ARGV[1]
  if mode ~= 'upsert' and mode ~= 'insert' then
    fail('BADARG', 'mode must be upsert or insert')
  end
  local p = check_publish(f, mode, ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
  local _, id, op = apply_publish(p)
  flush()
  return { f.epoch_text, f.rev_text, id, op }
end)
