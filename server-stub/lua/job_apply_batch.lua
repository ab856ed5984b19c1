-- job_apply_batch.lua: applies the changes of one batch job (one client's
-- changes to one feed, oldest first) in order, in one atomic call, each
-- exactly once. Loaded behind the feed layer's prelude.lua. For each change
-- in turn: (1) its applied record: a change applied (or refused) by an
-- earlier run returns its stored outcome and is not checked again; (2) its
-- checks (base revision, the feed layer's own), against the feed as the
-- changes before it left it; (3) its writes and its applied record. A
-- refusal (NOITEM, EXISTS, ...) is that change's outcome and the batch goes
-- on; a conflict stops the batch: the changes after it are not attempted
-- and get no record. The PUBLISHes of every applied change go out at the
-- end, in order. A change to an item an earlier change of the same call
-- wrote is checked from the revision that change produced (as the client
-- lifts the base of a later change to the same item once an earlier one is
-- accepted).
-- KEYS[1..n] job.applied:<byte length of F>:F:<change id> of each change
--         (the applied records, in the feed's hash slot)
-- KEYS[n+1..n+8] the feed's 8 keys, in the prelude's order
-- ARGV[1] applied-record retention in milliseconds
-- ARGV[2] n, the number of changes, then 9 arguments per change:
--   change id ("<client>:<seq>"; every change of the batch has the same client),
--   the rejected outcome JSON the worker decided (access rules, ...) or ''
--   (then the change is checked and applied here),
--   kind (upsert | insert | edit | retract | move), item id, item JSON text
--   (upsert, insert, edit; else ''), position ('' | begin | end | before |
--   after), reference item id or '', base ('' | '<epoch>:<rev>' | '<rev>'),
--   '1' when a missing feed is to be created (then NOFEED stops the batch)
-- Reply: a flat list of pairs, one per change attempted, in order:
--   'accepted', outcome JSON | 'rejected', outcome JSON (the worker's own
--   verdict) | 'refused', '<CODE> <message>' (the feed layer refused it:
--   NOITEM, EXISTS, BADPOS, NOREL, FEEDTYPE, NOFEED, BADARG, BADNAME)
--   then, when the batch stopped, 'stop', '<CODE> <message>' with CODE one
--   of CONFLICT (the item changed after the base, by another client),
--   UNKNOWNBASE (a base of another epoch, and the item exists or another
--   client changed it in this epoch) or NOFEED (the feed is missing and the
--   change creates it: the worker creates it and calls again); the change
--   that stopped it is the one after the last pair.
-- Errors: BADKEYS, BADARG (malformed arguments; nothing is written)
local CHANGE_ARGS = 9
local REFUSED = '!'

-- The items changed after revision `base` and up to revision `upto` by
-- changes that are not `client`'s own, read from the log once per call for
-- each (client, base, upto): the changes of a batch mostly share their base,
-- so the log is read once, not once per change.
local foreign = {}
local function foreign_since(f, base, upto, client)
  local key = client .. ' ' .. num(base) .. ' ' .. num(upto)
  local ids = foreign[key]
  if ids then return ids end
  ids = {}
  local entries = redis.call('XRANGE', f.log, num(base + 1) .. '-0', num(upto) .. '-0')
  for i = 1, #entries do
    local fields = entries[i][2]
    local e = {}
    for j = 1, #fields, 2 do e[fields[j]] = fields[j + 1] end
    if e.id and (not e.job or client_of(e.job) ~= client) then ids[e.id] = true end
  end
  foreign[key] = ids
  return ids
end

-- True when item `id` changed after revision `base` and up to revision
-- `upto` (the feed's revision when the call began: later entries are this
-- batch's own) by a change that is not from `client`'s own earlier jobs.
local function changed_between(f, id, base, upto, client)
  local decided = changed_unless_logged(f, id, base)
  if decided ~= nil then return decided end
  if base >= upto then return false end
  return foreign_since(f, base, upto, client)[id] == true
end

return run(function()
  local ttl = ARGV[1]
  local n = tonumber(ARGV[2])
  if not n or n < 1 or #ARGV ~= 2 + CHANGE_ARGS * n then
    fail('BADARG', 'expected n and ' .. CHANGE_ARGS .. ' arguments per change')
  end
  if #KEYS ~= n + FEED_KEY_COUNT then
    fail('BADKEYS', 'KEYS must be the n applied records and the feed\'s 8 keys')
  end
  local f = feed_at(KEYS, n + 1)
  local reply = {}
  local start_rev, start_epoch
  -- item id -> { epoch, rev } of the last write of this call to it.
  local lifted = {}
  local function stop(code, message)
    reply[#reply + 1] = 'stop'
    reply[#reply + 1] = code .. ' ' .. message
  end
  for c = 1, n do
    local a = 2 + CHANGE_ARGS * (c - 1)
    local job, verdict, kind, id = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
    local item, pos, rel, base, creates = ARGV[a + 5], ARGV[a + 6], ARGV[a + 7], ARGV[a + 8], ARGV[a + 9]
    local done = redis.call('GET', KEYS[c])
    if done then
      if string.sub(done, 1, 1) == REFUSED then
        reply[#reply + 1] = 'refused'
        reply[#reply + 1] = string.sub(done, 2)
      else
        reply[#reply + 1] = 'accepted'
        if string.sub(done, 1, 20) ~= '{"status":"accepted"' then reply[#reply] = 'rejected' end
        reply[#reply + 1] = done
      end
    elseif verdict ~= '' then
      redis.call('SET', KEYS[c], verdict, 'PX', ttl)
      reply[#reply + 1] = 'rejected'
      reply[#reply + 1] = verdict
    else
      local ok, result = pcall(function()
        check_feed(f)
        if not start_rev or start_epoch ~= f.epoch then
          -- Entries above the revision the call began at are this batch's.
          start_rev, start_epoch = f.rev, f.epoch
        end
        local client = client_of(job)
        local mine = lifted[id]
        if mine and mine[1] == f.epoch then base = num(mine[1]) .. ':' .. num(mine[2]) end
        if base ~= '' then
          local epoch, rev = string.match(base, '^(%d+):(%d+)$')
          local known = true
          if not epoch then
            rev = tonumber(base)
          else
            rev = tonumber(rev)
            known = (not f.new_epoch) and f.epoch ~= nil and tonumber(epoch) == f.epoch
          end
          if not rev then fail('BADARG', 'base ' .. base .. ' is not <epoch>:<rev> or <rev>') end
          if not known then
            if redis.call('HEXISTS', f.items, id) == 1
              or ((not f.new_epoch) and changed_between(f, id, 0, start_rev, client)) then
              fail('UNKNOWNBASE', 'item ' .. id .. ' of feed ' .. f.name .. ' has a base of another epoch')
            end
          elseif changed_between(f, id, rev, start_rev, client) then
            fail('CONFLICT', 'item ' .. id .. ' of feed ' .. f.name .. ' changed after revision ' .. num(rev))
          end
        end
        return check_write(f, kind, id, item, pos, rel, job)
      end)
      if not ok then
        if type(result) ~= 'string' or string.sub(result, 1, #FAIL_MARK) ~= FAIL_MARK then
          error(result, 0)
        end
        local refusal = string.sub(result, #FAIL_MARK + 1)
        local code = string.match(refusal, '^(%S+)')
        if code == 'CONFLICT' or code == 'UNKNOWNBASE' or (code == 'NOFEED' and creates == '1') then
          stop(code, string.sub(refusal, #code + 2))
          break
        end
        redis.call('SET', KEYS[c], REFUSED .. refusal, 'PX', ttl)
        reply[#reply + 1] = 'refused'
        reply[#reply + 1] = refusal
      else
        local rev = apply_write(kind, result)
        lifted[id] = { f.epoch, rev }
        local feed = cjson.encode(f.name)
        local outcome = '{"status":"accepted","result":null,"revs":{' .. feed .. ':' .. num(rev)
          .. '},"epochs":{' .. feed .. ':' .. num(f.epoch) .. '}}'
        redis.call('SET', KEYS[c], outcome, 'PX', ttl)
        reply[#reply + 1] = 'accepted'
        reply[#reply + 1] = outcome
      end
    end
  end
  flush()
  return reply
end)
