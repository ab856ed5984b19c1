-- job_apply.lua: applies the feed writes of one job atomically, exactly once.
-- Loaded behind the feed layer's prelude.lua. Phases: (1) the applied record:
-- a job applied already returns its stored outcome and writes nothing;
-- (2) checks: every write's base revision (conflict), guard and the feed
-- layer's own checks; (3) writes, the applied record; (4) the PUBLISHes.
-- KEYS[1] job.applied:<byte length of F>:<first feed F>:<job id> (the applied record, in the
--         first feed's hash slot)
-- KEYS[2..] the 8 keys of each feed the job writes, in the prelude's order
--         (feed.config:N ... feed.log:N); feed i starts at KEYS[2 + 8 * (i - 1)]
-- ARGV[1] job id (the client change id "<client>:<seq>")
-- ARGV[2] applied-record retention in milliseconds
-- ARGV[3] the handler's result, JSON text
-- ARGV[4] number of writes, then 8 arguments per write:
--   feed index (1-based), kind (upsert | insert | edit | retract | move),
--   item id, item JSON text (upsert, insert, edit; else ''),
--   position ('' | begin | end | before | after), reference item id or '',
--   base: '' (no conflict check), '<epoch>:<rev>', or a bare '<rev>' (read
--   in the feed's current epoch, from clients that send no epoch),
--   guard: the item revision the handler read, or '' (none)
-- Reply: { 'applied', outcome JSON } | { 'already', outcome JSON }
-- Errors: "<CODE> <write index> <message>" with CODE one of CONFLICT (the
--   item changed after the base revision, by another client), UNKNOWNBASE
--   (the base is of another epoch than the feed's, and the item exists or
--   another client changed it in this epoch: its revisions are never
--   compared across epochs), STALE (the
--   item's revision is no longer the guard), or the prelude's NOFEED,
--   FEEDTYPE, NOITEM, EXISTS, BADPOS, NOREL, BADARG, BADKEYS
local WRITE_ARGS = 8

-- Runs fn(); a fail() in it is raised again with the write index after the code.
local function at_write(i, fn)
  local ok, result = pcall(fn)
  if ok then return result end
  if type(result) == 'string' and string.sub(result, 1, #FAIL_MARK) == FAIL_MARK then
    local code, message = string.match(string.sub(result, #FAIL_MARK + 1), '^(%S+) ?(.*)$')
    fail(code, i .. ' ' .. message)
  end
  error(result, 0)
end

-- True when item `id` changed after revision `base` by a change that is not
-- from `client`'s own earlier jobs.
local function changed_since(f, id, base, client)
  local decided = changed_unless_logged(f, id, base)
  if decided ~= nil then return decided end
  local entries = redis.call('XRANGE', f.log, num(base + 1) .. '-0', '+')
  for i = 1, #entries do
    local fields = entries[i][2]
    local e = {}
    for j = 1, #fields, 2 do e[fields[j]] = fields[j + 1] end
    if e.id == id and (not e.job or client_of(e.job) ~= client) then
      return true
    end
  end
  return false
end

-- The revision of a base argument, and whether it is of the feed's current
-- epoch ('<epoch>:<rev>'; a bare '<rev>' is taken as the current epoch).
local function parse_base(f, text)
  local epoch, rev = string.match(text, '^(%d+):(%d+)$')
  if not epoch then return tonumber(text), true end
  return tonumber(rev), (not f.new_epoch) and f.epoch ~= nil and tonumber(epoch) == f.epoch
end

-- True when item `id` exists, or another client changed it in the feed's
-- current epoch (as far as the log reaches): what an unknown base conflicts with.
local function touched_in_epoch(f, id, client)
  if redis.call('HEXISTS', f.items, id) == 1 then return true end
  return (not f.new_epoch) and changed_since(f, id, 0, client)
end

return run(function()
  local job, ttl, result = ARGV[1], ARGV[2], ARGV[3]
  local done = redis.call('GET', KEYS[1])
  if done then return { 'already', done } end

  local feed_count = (#KEYS - 1) / FEED_KEY_COUNT
  if feed_count < 1 or feed_count ~= math.floor(feed_count) then
    fail('BADKEYS', '0 KEYS must be the applied record and 8 keys per feed')
  end
  local feeds = {}
  for i = 1, feed_count do
    feeds[i] = feed_at(KEYS, 2 + FEED_KEY_COUNT * (i - 1))
  end
  local client = client_of(job)
  local count = tonumber(ARGV[4]) or 0
  local plans = {}
  for w = 1, count do
    local a = 4 + WRITE_ARGS * (w - 1)
    local fi, kind, id, item = tonumber(ARGV[a + 1]), ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
    local pos, rel, base, guard = ARGV[a + 5], ARGV[a + 6], ARGV[a + 7], ARGV[a + 8]
    plans[w] = at_write(w, function()
      local f = feeds[fi]
      if not f then fail('BADARG', 'no feed ' .. tostring(ARGV[a + 1])) end
      check_feed(f)
      if base ~= '' then
        local rev, known = parse_base(f, base)
        if not rev then fail('BADARG', 'base ' .. base .. ' is not <epoch>:<rev> or <rev>') end
        if not known then
          if touched_in_epoch(f, id, client) then
            fail('UNKNOWNBASE', 'item ' .. id .. ' of feed ' .. f.name .. ' has a base of another epoch')
          end
        elseif changed_since(f, id, rev, client) then
          fail('CONFLICT', 'item ' .. id .. ' of feed ' .. f.name .. ' changed after revision ' .. num(rev))
        end
      end
      if guard ~= '' and (redis.call('HGET', f.itemrevs, id) or '0') ~= guard then
        fail('STALE', 'item ' .. id .. ' of feed ' .. f.name .. ' changed while the job ran')
      end
      local p = check_write(f, kind, id, item, pos, rel, job)
      p.kind = kind
      return p
    end)
  end

  local revs = {}
  for w = 1, #plans do
    local p = plans[w]
    revs[p.f.name] = apply_write(p.kind, p)
  end
  local parts, epochs = {}, {}
  for i = 1, #feeds do
    local rev = revs[feeds[i].name]
    if rev then
      parts[#parts + 1] = cjson.encode(feeds[i].name) .. ':' .. num(rev)
      epochs[#epochs + 1] = cjson.encode(feeds[i].name) .. ':' .. num(feeds[i].epoch)
    end
  end
  local outcome = '{"status":"accepted","result":' .. result .. ',"revs":{' .. table.concat(parts, ',')
    .. '},"epochs":{' .. table.concat(epochs, ',') .. '}}'
  redis.call('SET', KEYS[1], outcome, 'PX', ttl)
  flush()
  return { 'applied', outcome }
end)
