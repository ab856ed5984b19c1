-- adopt.lua: gives changes made by classic Thoonk writers (thoonk.py/js,
-- which write feed.ids/feed.items directly) a revision and a change-log entry,
-- exactly once, however many processes run it at the same time.
--
-- The adopter keeps a *mirror* of what readers of the change log know of the
-- feed: at revision `rev` of epoch `epoch`, the digest of every item's value
-- and, for a sorted feed, the order of the items. A run:
--   1. brings the mirror up to the feed's revision by replaying the log
--      entries after `rev` (changes written by our own scripts, which already
--      carry revisions: they are never adopted again);
--   2. compares the mirror with the classic keys (feed.ids, feed.items);
--   3. records each difference as a change (retract, edit, publish, position),
--      exactly as a write through our scripts would, and publishes its notice
--      on feed.changes:N with an extra field "adopted":true (no classic
--      message: the classic writer sent those);
--   4. stores the mirror at the new revision.
-- The script is atomic, so a second run (another gateway process) finds the
-- mirror at the feed's revision and nothing to adopt.
--
-- KEYS[1..8] the feed's keys, in the prelude's order (see publish.lua)
-- KEYS[9]    feed.adopted:N (HASH): epoch, rev, order (sorted feeds: ids
--            joined by NUL), fp (fingerprint, below), d:<id> -> digest of
--            the item's value
-- ARGV[1]    'full' (default): compare everything; 'sweep': first compare the
--            fingerprint of the feed (epoch, revision, feed.publishes:N,
--            number of items and ids) with the one the last run stored, and
--            stop when it is unchanged (or, for a time-ordered feed, when the
--            change-log entries since explain the whole change; at most
--            SWEEP_CHUNK entries per run, the running account kept in
--            'acct' until a run reaches the feed's revision). Every classic write but a sorted
--            feed's move changes it; a move's event is published in the same
--            transaction, so only a dropped subscription loses it, after
--            which the adopter runs in full mode. 'auto': 'full' for a
--            sorted feed, 'sweep' for a time-ordered one (whose every classic
--            write, thoonk.py's included, changes the fingerprint), so a run
--            on a large time-ordered feed costs O(1) unless it changed.
-- Reply: { epoch, rev, number of changes adopted }; a feed that does not
-- exist (or is a queue/job) replies { '0', '0', 0 } and writes nothing but
-- the removal of a stale mirror.
-- Errors: BADKEYS, BADNAME

-- The most change-log entries a sweep accounts for in one run.
local SWEEP_CHUNK = 2000

-- Scores below this are seconds (thoonk.py's Feed.publish), not milliseconds.
local SECONDS_SCALE = 100000000000

local function valid_id(id)
  return id ~= '' and #id <= MAX_NAME_LEN and not string.find(id, '\0', 1, true)
end

-- The digest of a stored value as readers see it: non-JSON text (a classic
-- writer's) is read as a JSON string, so it is digested in that form, and a
-- log entry's item (JSON text) digests the same as the stored value.
local function digest(text)
  return redis.sha1hex(json_text(text))
end

-- Fast path for JSON text: its own sha1 is its digest.
local function same_value(text, known)
  if redis.sha1hex(text) == known then return true end
  return digest(text) == known
end

local function split_nul(text)
  local out = {}
  if not text or text == '' then return out end
  local start = 1
  while true do
    local i = string.find(text, '\0', start, true)
    if not i then
      out[#out + 1] = string.sub(text, start)
      return out
    end
    out[#out + 1] = string.sub(text, start, i - 1)
    start = i + 1
  end
end

local function split_colon(text)
  local out = {}
  for part in string.gmatch(text, '[^:]+') do out[#out + 1] = part end
  return out
end

local function entry_fields(raw)
  local e = {}
  for i = 1, #raw, 2 do e[raw[i]] = raw[i + 1] end
  return e
end

local function index_of(list, id)
  for i = 1, #list do
    if list[i] == id then return i end
  end
  return nil
end

local function remove_id(list, id)
  local i = index_of(list, id)
  if i then table.remove(list, i) end
end

-- Places id in the mirror order as a reader of the log would.
local function place_id(list, id, pos, rel)
  remove_id(list, id)
  if pos == 'begin' then
    table.insert(list, 1, id)
    return
  end
  if pos == 'before' or pos == 'after' then
    local i = index_of(list, rel)
    if i then
      table.insert(list, pos == 'before' and i or i + 1, id)
      return
    end
  end
  list[#list + 1] = id
end

-- The item's last logged value (JSON text), for `prev`: the entry of its
-- revision, or an earlier one when that entry carries no value (a move).
local function logged_value(f, id)
  local rev = redis.call('HGET', f.itemrevs, id)
  if not rev then return nil end
  local entries = redis.call('XREVRANGE', f.log, rev .. '-0', '-', 'COUNT', 100)
  for i = 1, #entries do
    local e = entry_fields(entries[i][2])
    if e.id == id then
      if e.op == 'retract' then return nil end
      if e.item then return e.item end
    end
  end
  return nil
end

-- Longest strictly increasing subsequence of seq (values), as a set of the
-- positions in seq that belong to it.
local function lis_positions(seq)
  local tails, tail_pos, prev = {}, {}, {}
  for i = 1, #seq do
    local v = seq[i]
    local lo, hi = 1, #tails + 1
    while lo < hi do
      local mid = math.floor((lo + hi) / 2)
      if tails[mid] < v then lo = mid + 1 else hi = mid end
    end
    tails[lo] = v
    tail_pos[lo] = i
    prev[i] = lo > 1 and tail_pos[lo - 1] or nil
  end
  local keep = {}
  local i = tail_pos[#tails]
  while i do
    keep[i] = true
    i = prev[i]
  end
  return keep
end

return run(function()
  local f = feed_at(KEYS, 1)
  local mkey = KEYS[9]
  if mkey ~= 'feed.adopted:' .. f.name then
    fail('BADKEYS', 'KEYS[9] must be feed.adopted:' .. f.name)
  end
  read_feed(f)
  if f.type ~= 'feed' and f.type ~= 'sorted_feed' then
    if not f.type then redis.call('DEL', mkey) end
    return { '0', '0', 0 }
  end
  local sorted = f.type == 'sorted_feed'

  local function fingerprint()
    local len = sorted and redis.call('LLEN', f.ids) or redis.call('ZCARD', f.ids)
    return table.concat({ num(f.epoch or 0), num(f.rev),
      redis.call('GET', f.publishes) or '0', redis.call('HLEN', f.items), len }, ':')
  end
  local mode = ARGV[1]
  if mode == 'auto' then mode = sorted and 'full' or 'sweep' end
  if mode == 'sweep' and not f.new_epoch and f.epoch then
    local fp = fingerprint()
    local stored = redis.call('HMGET', mkey, 'fp', 'epoch', 'rev')
    if stored[1] == fp then
      return { num(f.epoch), num(f.rev), 0 }
    end
    -- A time-ordered feed whose fingerprint moved only by our own writes
    -- since the last run: the log entries after the mirror's revision
    -- account for the whole difference (each publish or edit adds one to
    -- feed.publishes, each new id one item, each retract one item less).
    -- Then the mirror takes those entries' digests and nothing is read in
    -- full: the cost is O(entries), not O(items).
    local m_epoch, m_rev = tonumber(stored[2]), tonumber(stored[3])
    local oldest = m_rev and m_rev < f.rev and oldest_logged(f)
    if not sorted and stored[1] and m_epoch == f.epoch and oldest and oldest <= m_rev + 1 then
      -- The running account: where a chunked run stopped ('acct':
      -- publishes:items:ids), else the last verified fingerprint.
      local acct = redis.call('HGET', mkey, 'acct')
      local publishes, items, ids
      if acct then
        local a = split_colon(acct)
        publishes, items, ids = tonumber(a[1]), tonumber(a[2]), tonumber(a[3])
      else
        local was = split_colon(stored[1])
        publishes, items, ids = tonumber(was[3]), tonumber(was[4]), tonumber(was[5])
      end
      local digests = {} -- id -> digest, or false once retracted
      local function present(id)
        if digests[id] ~= nil then return digests[id] ~= false end
        return redis.call('HEXISTS', mkey, 'd:' .. id) == 1
      end
      -- At most SWEEP_CHUNK entries per run, so that a busy feed never
      -- blocks Redis for long: the next sweep goes on from there.
      local entries = redis.call('XRANGE', f.log, num(m_rev + 1) .. '-0', '+',
        'COUNT', SWEEP_CHUNK)
      local last_rev = m_rev
      if #entries > 0 then
        last_rev = tonumber(string.match(entries[#entries][1], '^(%d+)'))
      end
      for i = 1, #entries do
        local e = entry_fields(entries[i][2])
        local id = e.id
        if id and e.op == 'retract' then
          if present(id) then items, ids = items - 1, ids - 1 end
          digests[id] = false
        elseif id and e.item then
          publishes = publishes + 1
          if not present(id) then items, ids = items + 1, ids + 1 end
          digests[id] = digest(e.item)
        end
      end
      local expected = table.concat({ num(f.epoch), num(f.rev), num(publishes),
        num(items), num(ids) }, ':')
      local partial = last_rev < f.rev
      if partial or expected == fp then
        -- In slices: unpack() has a bounded stack.
        local put, gone = { 'HSET', mkey }, { 'HDEL', mkey }
        for id, d in pairs(digests) do
          if d then
            put[#put + 1] = 'd:' .. id
            put[#put + 1] = d
            if #put >= 2000 then redis.call(unpack(put)); put = { 'HSET', mkey } end
          else
            gone[#gone + 1] = 'd:' .. id
            if #gone >= 1000 then redis.call(unpack(gone)); gone = { 'HDEL', mkey } end
          end
        end
        if #put > 2 then redis.call(unpack(put)) end
        if #gone > 2 then redis.call(unpack(gone)) end
        if partial then
          -- The mirror is at last_rev; the account is checked once a run
          -- reaches the feed's revision (and compared in full if it fails).
          redis.call('HSET', mkey, 'rev', num(last_rev),
            'acct', table.concat({ num(publishes), num(items), num(ids) }, ':'))
        else
          redis.call('HSET', mkey, 'rev', num(f.rev), 'fp', fp)
          redis.call('HDEL', mkey, 'acct')
        end
        return { num(f.epoch), num(f.rev), 0 }
      end
    end
  end

  -- ------------------------------------------------ the classic state
  local values = {}
  local all = redis.call('HGETALL', f.items)
  for i = 1, #all, 2 do values[all[i]] = all[i + 1] end
  local cur, in_cur, scores = {}, {}, {}
  if sorted then
    local ids = redis.call('LRANGE', f.ids, 0, -1)
    for i = 1, #ids do
      local id = ids[i]
      if values[id] and not in_cur[id] and valid_id(id) then
        cur[#cur + 1] = id
        in_cur[id] = true
      end
    end
  else
    local ids = redis.call('ZRANGE', f.ids, 0, -1, 'WITHSCORES')
    for i = 1, #ids, 2 do
      local id = ids[i]
      if values[id] and valid_id(id) then
        cur[#cur + 1] = id
        in_cur[id] = true
        scores[id] = tonumber(ids[i + 1])
      end
    end
  end

  -- ------------------------------------------------ the mirror at f.rev
  local state = redis.call('HMGET', mkey, 'epoch', 'rev', 'order')
  local m_epoch, m_rev = tonumber(state[1]), tonumber(state[2])
  local known, order = {}, {}
  local touched = {} -- ids whose digest changed since the stored mirror
  local rebuilt = false
  local replay_from = nil
  local valid = not f.new_epoch and f.epoch ~= nil and m_epoch == f.epoch
    and m_rev ~= nil and m_rev <= f.rev
  if valid and m_rev < f.rev then
    local oldest = oldest_logged(f)
    valid = oldest ~= nil and oldest <= m_rev + 1
  end
  if valid then
    local fields = redis.call('HGETALL', mkey)
    for i = 1, #fields, 2 do
      if string.sub(fields[i], 1, 2) == 'd:' then
        known[string.sub(fields[i], 3)] = fields[i + 1]
      end
    end
    if sorted then order = split_nul(state[3]) end
    if m_rev < f.rev then replay_from = m_rev end
  else
    rebuilt = true
    if f.reset_history or f.rev == 0 then
      -- No trusted history: every item is new to readers.
    elseif oldest_logged(f) == 1 then
      replay_from = 0
    else
      -- The log no longer reaches back: readers know what the item
      -- revisions say they know, with the values they have now.
      local revs = redis.call('HKEYS', f.itemrevs)
      local has = {}
      for i = 1, #revs do
        local id = revs[i]
        has[id] = true
        known[id] = values[id] and digest(values[id]) or ''
      end
      for i = 1, #cur do
        if has[cur[i]] then order[#order + 1] = cur[i] end
      end
      for i = 1, #revs do
        if not in_cur[revs[i]] then order[#order + 1] = revs[i] end
      end
    end
  end
  if replay_from then
    local entries = redis.call('XRANGE', f.log, num(replay_from + 1) .. '-0', '+')
    for i = 1, #entries do
      local e = entry_fields(entries[i][2])
      local id = e.id
      if id then
        if e.op == 'retract' then
          known[id] = nil
          touched[id] = true
          if sorted then remove_id(order, id) end
        elseif e.op == 'position' then
          if sorted and known[id] then place_id(order, id, e.pos, e.rel) end
        elseif e.item then
          local new = not known[id]
          known[id] = digest(e.item)
          touched[id] = true
          if sorted and (e.op == 'publish' or new) then
            place_id(order, id, e.pos or 'end', e.rel)
          end
        end
      end
    end
  end

  -- ------------------------------------------------ the differences
  local changes = {}
  -- Retracted: known to readers, gone from the classic keys.
  local gone = {}
  if sorted then
    for i = 1, #order do
      if not in_cur[order[i]] then gone[#gone + 1] = order[i] end
    end
  else
    for id in pairs(known) do
      if not in_cur[id] then gone[#gone + 1] = id end
    end
    table.sort(gone)
  end
  for i = 1, #gone do
    changes[#changes + 1] = { op = 'retract', id = gone[i], prev = logged_value(f, gone[i]) }
  end
  if sorted then
    -- Edits in place.
    for i = 1, #cur do
      local id = cur[i]
      if known[id] and not same_value(values[id], known[id]) then
        changes[#changes + 1] = { op = 'edit', id = id, item = json_text(values[id]),
          prev = logged_value(f, id) }
      end
    end
    -- Order: the known items on a longest increasing run of their mirror
    -- positions stay; every other item (moved or new) is placed after its
    -- predecessor in the classic order, in that order.
    local at = {}
    local rank = 0
    for i = 1, #order do
      if in_cur[order[i]] then
        rank = rank + 1
        at[order[i]] = rank
      end
    end
    local seq, seq_ids = {}, {}
    for i = 1, #cur do
      if known[cur[i]] then
        seq[#seq + 1] = at[cur[i]]
        seq_ids[#seq_ids + 1] = cur[i]
      end
    end
    local keep_pos = lis_positions(seq)
    local stays = {}
    for i = 1, #seq_ids do
      if keep_pos[i] then stays[seq_ids[i]] = true end
    end
    for i = 1, #cur do
      local id = cur[i]
      if not stays[id] then
        local pos, rel = 'after', cur[i - 1]
        if i == 1 then pos, rel = 'begin', nil
        elseif i == #cur then pos, rel = 'end', nil end
        if known[id] then
          changes[#changes + 1] = { op = 'position', id = id, pos = pos, rel = rel }
        else
          changes[#changes + 1] = { op = 'publish', id = id, item = json_text(values[id]),
            pos = pos, rel = rel }
        end
      end
    end
  else
    -- A time-ordered feed only appends: new items are published, changed
    -- ones edited, in the classic (score) order; each moves to the end with
    -- a millisecond score so that the classic order stays the log's order.
    -- A known item with a score in seconds was published again by
    -- thoonk.py with the same value: an edit too.
    for i = 1, #cur do
      local id = cur[i]
      local c
      if not known[id] then
        c = { op = 'publish', id = id, item = json_text(values[id]), pos = 'end' }
      elseif not same_value(values[id], known[id]) or scores[id] < SECONDS_SCALE then
        c = { op = 'edit', id = id, item = json_text(values[id]), pos = 'end',
          prev = logged_value(f, id) }
      end
      if c then
        c.rescore = true
        changes[#changes + 1] = c
      end
    end
  end

  if #changes == 0 and not rebuilt and not replay_from then
    local fp = fingerprint()
    if redis.call('HGET', mkey, 'fp') ~= fp then redis.call('HSET', mkey, 'fp', fp) end
    return { num(f.epoch or 0), num(f.rev), 0 }
  end
  if #changes == 0 and f.new_epoch then
    -- Nothing to record, and no epoch to start for it: the next write does.
    redis.call('DEL', mkey)
    local epoch, rev = f.epoch or 0, f.rev
    if f.reset_history then epoch, rev = 0, 0 end
    return { num(epoch), num(rev), 0 }
  end

  -- ------------------------------------------------ writes
  begin_writes(f)
  for i = 1, #changes do
    local c = changes[i]
    if c.rescore then
      redis.call('ZADD', f.ids, next_score(f), c.id)
    end
    -- The notice is marked as adopted, so that adopters tell it from the
    -- notice of a write of our scripts (which follows that write's classic
    -- events).
    record(f, c.op, c.id, c.item, c.pos, c.rel, c.prev, nil, true)
    if c.op == 'retract' then
      known[c.id] = nil
    else
      known[c.id] = digest(values[c.id])
    end
    touched[c.id] = true
  end
  -- The mirror: rewritten whole when rebuilt, else only what changed.
  redis.call('HDEL', mkey, 'acct')
  local fields = { 'HSET', mkey, 'epoch', num(f.epoch), 'rev', num(f.rev), 'fp', fingerprint() }
  if sorted then
    local now_order = table.concat(cur, '\0')
    if rebuilt or now_order ~= state[3] then
      fields[#fields + 1] = 'order'
      fields[#fields + 1] = now_order
    end
  end
  local gone_fields = {}
  local function put(id, d)
    fields[#fields + 1] = 'd:' .. id
    fields[#fields + 1] = d
    if #fields >= 2000 then
      redis.call(unpack(fields))
      fields = { 'HSET', mkey }
    end
  end
  if rebuilt then
    redis.call('DEL', mkey)
    for id, d in pairs(known) do put(id, d) end
  else
    for id in pairs(touched) do
      if known[id] then
        put(id, known[id])
      else
        gone_fields[#gone_fields + 1] = 'd:' .. id
      end
    end
  end
  if #fields > 2 then redis.call(unpack(fields)) end
  for first = 1, #gone_fields, 1000 do
    redis.call('HDEL', mkey, unpack(gone_fields, first, math.min(first + 999, #gone_fields)))
  end
  flush()
  return { num(f.epoch), num(f.rev), #changes }
end)
