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
-- A large time-ordered feed is compared in *pages* (a pass), one short call
-- each, so that no call blocks Redis for long; a sorted feed is compared
-- whole (its order check needs the whole list). See "A pass in pages"
-- below and docs/INTEROP.md.
--
-- KEYS[1..8] the feed's keys, in the prelude's order (see publish.lua)
-- KEYS[9]    feed.adopted:N (HASH): epoch, rev, order (sorted feeds: ids
--            joined by NUL), fp (fingerprint, below), acct (running
--            account, below), pass / pcur / pend (a pass in progress, below),
--            d:<id> -> digest of the item's value
-- ARGV[1]    'full' (default): compare everything (a time-ordered feed: a
--            pass; a pass already in progress is joined, not restarted);
--            'sweep': first compare the fingerprint of the feed (epoch,
--            revision, feed.publishes:N, number of items and ids) with the
--            one the last run stored, and stop when it is unchanged (or, for
--            a time-ordered feed, when the change-log entries since explain
--            the whole change, the running account kept in 'acct' until a
--            call reaches the feed's revision), else start a pass. Every
--            classic write but a sorted feed's move changes it; a move's
--            event is published in the same transaction, so only a dropped
--            subscription loses it, after which the adopter runs in full
--            mode. 'auto': 'full' for a sorted feed, 'sweep' for a
--            time-ordered one (whose every classic write, thoonk.py's
--            included, changes the fingerprint), so a run on a large
--            time-ordered feed costs O(1) unless it changed.
-- ARGV[2]    optional: the page, how many items, log entries or mirror
--            fields one call of a time-ordered feed reads at most (1..1000,
--            default PAGE)
-- Reply: { epoch, rev, number of changes adopted, more }: more is 1 when
-- the call stopped partway (a pass or a catch-up from the log goes on) and
-- the caller should call again at once, 0 when the run is complete. A feed
-- that does not exist (or is a queue/job) replies { '0', '0', 0, 0 } and
-- writes nothing but the removal of a stale mirror.
-- Errors: BADKEYS, BADNAME

-- How many items, change-log entries or mirror fields one call of a
-- time-ordered feed reads at most (a few milliseconds of Redis time).
local PAGE = 128
local MAX_PAGE = 1000
-- How many changes one call of a pass adopts at most: recording one costs
-- several writes (log entry, revision, notice), some 50-80 µs.
local MAX_CHANGES = 32

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
  -- Nearly always the entry of its revision holds it: read that one alone
  -- (an adoption of many changes reads one entry for each, not a hundred).
  -- When that entry is gone, the log was trimmed past it and holds no
  -- older one either; and a reverse range that starts below the log's
  -- first entry costs Redis a walk over the whole stream (over 1 ms for
  -- 10,000 entries), so it is never asked for.
  local own = redis.call('XRANGE', f.log, rev .. '-0', rev .. '-0')
  if not own[1] then return nil end
  local e = entry_fields(own[1][2])
  if e.id == id and e.item then return e.item end
  if e.id == id and e.op == 'retract' then return nil end
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

-- ------------------------------------------------ A pass in pages
--
-- A time-ordered feed is compared by a *pass* of short calls, its state in
-- the mirror: `pass` the phase, `pcur` its cursor, `pend` the highest score
-- of feed.ids when the pass began, `acct` the running account. Every call
-- first brings the mirror to the feed's revision from the log (at most a
-- page of entries; a call that does not get there stops and replies
-- more = 1), then does one page of its phase:
--   's' start: the account (publishes:items:ids, the feed's counters now)
--       and `pend` are taken; on to 'x' in the same call;
--   'r' rebuild, when the log no longer reaches back to the mirror: a page
--       of HSCAN of feed.itemrevs:N (cursor `pcur`); an item with a
--       revision that the mirror does not know yet from the log is taken
--       as known to readers with its current value; then 'x';
--   'x' retracts: a page of HSCAN of the mirror's d: fields (cursor
--       `pcur`); each item the classic keys no longer hold is retracted
--       (first, as a whole compare does: a trimmed feed never shows more
--       than max_length items), at most MAX_CHANGES a call (the same
--       cursor again while more are left); then 'i';
--   'i' items: the next page of feed.ids:N in score order after `pcur`
--       ("<score> <id>", the last item of the previous page left in place),
--       up to `pend`: each new or changed item is adopted (publish / edit),
--       in the classic order, and re-scored after `pend`, so the pass never
--       meets it again; at most MAX_CHANGES a call (the page stops there).
--       The page that reaches `pend` ends the pass.
-- A pass ends by storing the fingerprint. Each call is atomic and all
-- state is in the mirror, so any number of adopters may run pages of the
-- same pass, and our scripts and classic writers may write between pages:
-- our writes reach the mirror from the log (and the account: +1 publish
-- per publish or edit, +1 item per new id, -1 per retract), an adoption
-- updates the mirror in its own call. A classic write between pages may
-- land behind the cursor (thoonk.py scores in seconds, which sort first)
-- and be missed; but every classic write to a time-ordered feed moves its
-- counters, so at the end the counters differ from the account: the pass
-- then stores the account's fingerprint, which the next sweep finds
-- wrong, and another pass runs.

local function counters(f)
  return { tonumber(redis.call('GET', f.publishes) or '0'), redis.call('HLEN', f.items),
    redis.call('ZCARD', f.ids) }
end

local function acct_text(a)
  return num(a[1]) .. ':' .. num(a[2]) .. ':' .. num(a[3])
end

local function parse_acct(text)
  local a = split_colon(text)
  return { tonumber(a[1]), tonumber(a[2]), tonumber(a[3]) }
end

-- The highest score of feed.ids ('' when empty).
local function top_score(f)
  local top = redis.call('ZRANGE', f.ids, -1, -1, 'WITHSCORES')
  return top[2] or ''
end

-- Writes HSET / HDEL of the mirror in slices (unpack() has a bounded stack).
local function put_digests(mkey, digests)
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
end

-- Brings the mirror from revision m_rev towards the feed's: at most `limit`
-- log entries (changes of our scripts: an adoption moves the mirror past
-- its own entries in its own call). The account `acct`, when given, is
-- carried along. Returns the mirror's new revision.
local function catch_up(f, mkey, m_rev, limit, acct)
  local entries = redis.call('XRANGE', f.log, num(m_rev + 1) .. '-0', '+', 'COUNT', limit)
  if #entries == 0 then return m_rev end
  local last = tonumber(string.match(entries[#entries][1], '^(%d+)'))
  local digests = {} -- id -> digest, or false once retracted
  local function present(id)
    if digests[id] ~= nil then return digests[id] ~= false end
    return redis.call('HEXISTS', mkey, 'd:' .. id) == 1
  end
  for i = 1, #entries do
    local e = entry_fields(entries[i][2])
    local id = e.id
    if id and e.op == 'retract' then
      if acct and present(id) then acct[2], acct[3] = acct[2] - 1, acct[3] - 1 end
      digests[id] = false
    elseif id and e.item then
      if acct then
        acct[1] = acct[1] + 1
        if not present(id) then acct[2], acct[3] = acct[2] + 1, acct[3] + 1 end
      end
      -- A logged item is JSON text (our scripts write trusted JSON, the
      -- adopter json_text): its digest is its own SHA-1.
      digests[id] = redis.sha1hex(e.item)
    end
  end
  put_digests(mkey, digests)
  if acct then
    redis.call('HSET', mkey, 'rev', num(last), 'acct', acct_text(acct))
  else
    redis.call('HSET', mkey, 'rev', num(last))
  end
  return last
end

-- After a page of an HSCAN phase: the scan's next cursor, or, once the scan
-- is through (cursor '0'), the next phase from its first cursor.
local function after_scan(put, scanned, next_pass, first_cursor)
  if scanned == '0' then
    put[#put + 1] = 'pass'; put[#put + 1] = next_pass
    put[#put + 1] = 'pcur'; put[#put + 1] = first_cursor
  else
    put[#put + 1] = 'pcur'; put[#put + 1] = scanned
  end
end

-- One call on a time-ordered feed. `page` bounds what it reads.
local function paged(f, mkey, mode, page)
  local function reply(changes, more)
    local epoch, rev = f.epoch or 0, f.rev
    if f.reset_history then epoch, rev = 0, 0 end
    return { num(epoch), num(rev), changes, more and 1 or 0 }
  end
  local function fingerprint_of(a)
    local epoch = f.epoch or 0
    if f.reset_history then epoch = 0 end
    return num(epoch) .. ':' .. num(f.rev) .. ':' .. acct_text(a)
  end
  local st = redis.call('HMGET', mkey, 'epoch', 'rev', 'fp', 'acct', 'pass', 'pcur', 'pend')
  local m_epoch, m_rev = tonumber(st[1]), tonumber(st[2])
  local valid
  if f.reset_history then
    -- No trusted history: the mirror knows nothing (epoch 0) until the
    -- first adoption starts the feed's epoch.
    valid = m_epoch == 0 and m_rev == 0
  else
    -- (A feed that must start a new epoch over a history it keeps — a
    -- failover, a lost log — keeps its epoch until the first write, by an
    -- adoption or our scripts; the mirror follows it then.)
    valid = m_epoch == f.epoch and m_rev ~= nil and m_rev <= f.rev
    if valid and m_rev < f.rev then
      local oldest = oldest_logged(f)
      valid = oldest ~= nil and oldest <= m_rev + 1
    end
  end
  if not valid then
    -- A new mirror, and a pass over it. UNLINK: a large stale mirror is
    -- freed outside the call.
    redis.call('UNLINK', mkey)
    if f.reset_history or f.rev == 0 then
      -- Every classic item is new to readers.
      redis.call('HSET', mkey, 'epoch', f.reset_history and '0' or num(f.epoch), 'rev', '0',
        'pass', 's')
    elseif oldest_logged(f) == 1 then
      -- The whole log: readers know what it says.
      redis.call('HSET', mkey, 'epoch', num(f.epoch), 'rev', '0', 'pass', 's')
    else
      -- The log no longer reaches back: readers know what the item
      -- revisions say they know (rebuilt page by page).
      redis.call('HSET', mkey, 'epoch', num(f.epoch), 'rev', num(f.rev), 'pass', 'r',
        'pcur', '0', 'acct', acct_text(counters(f)), 'pend', top_score(f))
    end
    return reply(0, true)
  end

  local pass = st[5]
  local acct = st[4] and parse_acct(st[4])
  if not pass and mode == 'sweep' then
    local stored = st[3]
    if stored and stored == fingerprint_of(counters(f)) then return reply(0, false) end
    -- A fingerprint moved only by our own writes since the last run: the
    -- log entries after the mirror's revision account for the whole
    -- difference. Then the mirror takes those entries' digests and nothing
    -- is read in full: O(entries), not O(items), a page of them per call.
    if not acct and stored then
      local was = split_colon(stored)
      if tonumber(was[2]) == m_rev then
        acct = { tonumber(was[3]), tonumber(was[4]), tonumber(was[5]) }
      end
    end
    if acct then
      if m_rev < f.rev then
        m_rev = catch_up(f, mkey, m_rev, page, acct)
        if m_rev < f.rev then return reply(0, true) end
      end
      local fp = fingerprint_of(counters(f))
      if fp == fingerprint_of(acct) then
        redis.call('HSET', mkey, 'fp', fp)
        redis.call('HDEL', mkey, 'acct')
        return reply(0, false)
      end
    end
    -- Something else changed the feed: a pass.
    redis.call('HSET', mkey, 'pass', 's')
    return reply(0, true)
  end
  if not pass or (pass ~= 's' and not acct) then
    pass = 's'
    redis.call('HSET', mkey, 'pass', 's')
  end

  -- The mirror first reaches the feed's revision, a page of entries per call.
  if m_rev < f.rev then
    m_rev = catch_up(f, mkey, m_rev, page, pass ~= 's' and acct or nil)
    if m_rev < f.rev then return reply(0, true) end
  end
  local cursor, pend = st[6] or '', st[7] or ''
  if pass == 's' then
    acct = counters(f)
    pend = top_score(f)
    cursor = '0'
    pass = 'x'
    redis.call('HSET', mkey, 'pass', 'x', 'pcur', '0', 'pend', pend, 'acct', acct_text(acct))
  end

  if pass == 'r' then
    local res = redis.call('HSCAN', f.itemrevs, cursor == '' and '0' or cursor, 'COUNT', page)
    local ids, fields = {}, {}
    for i = 1, #res[2], 2 do
      ids[#ids + 1] = res[2][i]
      fields[#fields + 1] = 'd:' .. res[2][i]
    end
    local put = { 'HSET', mkey }
    if #ids > 0 then
      local known = redis.call('HMGET', mkey, unpack(fields))
      local values = redis.call('HMGET', f.items, unpack(ids))
      for i = 1, #ids do
        if not known[i] then
          put[#put + 1] = fields[i]
          put[#put + 1] = values[i] and digest(values[i]) or ''
        end
      end
    end
    after_scan(put, res[1], 'x', '0')
    redis.call(unpack(put))
    return reply(0, true)
  end

  local changes = {}
  local put = { 'HSET', mkey }
  local more = true
  if pass == 'i' then
    -- Where the previous page stopped: right after its last item left in
    -- place, or, when a writer moved or removed that item since, at the
    -- first item of its score (a few items seen again, none skipped).
    local start = 0
    if cursor ~= '' then
      local sp = string.find(cursor, ' ', 1, true)
      local score, last = string.sub(cursor, 1, sp - 1), string.sub(cursor, sp + 1)
      if redis.call('ZSCORE', f.ids, last) == score then
        start = redis.call('ZRANK', f.ids, last) + 1
      else
        start = redis.call('ZCOUNT', f.ids, '-inf', '(' .. score)
      end
    end
    local got = {}
    if pend ~= '' then
      got = redis.call('ZRANGE', f.ids, start, start + page - 1, 'WITHSCORES')
    end
    local ended = #got < 2 * page
    local pend_n = tonumber(pend)
    local ids, scores = {}, {}
    for i = 1, #got, 2 do
      if tonumber(got[i + 1]) > pend_n then
        ended = true
        break
      end
      ids[#ids + 1] = got[i]
      scores[#ids] = got[i + 1]
    end
    if #ids > 0 then
      local values = redis.call('HMGET', f.items, unpack(ids))
      local fields = {}
      for i = 1, #ids do fields[i] = 'd:' .. ids[i] end
      local known = redis.call('HMGET', mkey, unpack(fields))
      -- As in a whole compare: new items are published, changed ones
      -- edited (a known item with a score in seconds too), in the classic
      -- order, each moved to the end.
      for i = 1, #ids do
        local id, value, k = ids[i], values[i], known[i]
        local c
        if value and valid_id(id) then
          if not k then
            c = { op = 'publish', id = id, item = json_text(value) }
          elseif not same_value(value, k) or tonumber(scores[i]) < SECONDS_SCALE then
            c = { op = 'edit', id = id, item = json_text(value), prev = logged_value(f, id) }
          end
        end
        if c then
          changes[#changes + 1] = c
          if #changes >= MAX_CHANGES and i < #ids then
            -- The rest of the page is the next call's (after the cursor).
            ended = false
            break
          end
        else
          cursor = scores[i] .. ' ' .. id
        end
      end
    end
    if #changes > 0 then begin_writes(f) end
    for i = 1, #changes do
      local c = changes[i]
      redis.call('ZADD', f.ids, next_score(f), c.id)
      record(f, c.op, c.id, c.item, 'end', nil, c.prev, nil, true)
      put[#put + 1] = 'd:' .. c.id
      put[#put + 1] = redis.sha1hex(c.item)
    end
    if ended then
      -- The pass ends. No classic write since it began: the counters are
      -- the account's, the mirror is the feed. Else the account's
      -- fingerprint, which the next sweep finds wrong.
      local now = counters(f)
      local fp
      if acct_text(now) == acct_text(acct) then
        fp = fingerprint_of(now)
      else
        fp = fingerprint_of(acct)
      end
      redis.call('HDEL', mkey, 'pass', 'pcur', 'pend', 'acct')
      put[#put + 1] = 'fp'; put[#put + 1] = fp
      more = false
    else
      put[#put + 1] = 'pcur'; put[#put + 1] = cursor
    end
  else -- 'x'
    local res = redis.call('HSCAN', mkey, cursor == '' and '0' or cursor, 'MATCH', 'd:*',
      'COUNT', page)
    local gone = {}
    for i = 1, #res[2], 2 do
      local id = string.sub(res[2][i], 3)
      if not redis.call('ZSCORE', f.ids, id) or redis.call('HEXISTS', f.items, id) == 0 then
        gone[#gone + 1] = id
      end
    end
    table.sort(gone)
    -- At most MAX_CHANGES a call: the rest are found again by the same
    -- cursor (the retracted ones are gone from the mirror by then).
    local again = #gone > MAX_CHANGES
    while #gone > MAX_CHANGES do gone[#gone] = nil end
    if #gone > 0 then
      begin_writes(f)
      local fields = { 'HDEL', mkey }
      for i = 1, #gone do
        changes[#changes + 1] = gone[i]
        record(f, 'retract', gone[i], nil, nil, nil, logged_value(f, gone[i]), nil, true)
        fields[#fields + 1] = 'd:' .. gone[i]
      end
      redis.call(unpack(fields))
    end
    if again then
      put[#put + 1] = 'pcur'; put[#put + 1] = cursor == '' and '0' or cursor
    else
      after_scan(put, res[1], 'i', '')
    end
  end
  if #changes > 0 then
    put[#put + 1] = 'epoch'; put[#put + 1] = num(f.epoch)
    put[#put + 1] = 'rev'; put[#put + 1] = num(f.rev)
  end
  redis.call(unpack(put))
  flush()
  return reply(#changes, more)
end

return run(function()
  local f = feed_at(KEYS, 1)
  local mkey = KEYS[9]
  if mkey ~= 'feed.adopted:' .. f.name then
    fail('BADKEYS', 'KEYS[9] must be feed.adopted:' .. f.name)
  end
  read_feed(f)
  if f.type ~= 'feed' and f.type ~= 'sorted_feed' then
    if not f.type then redis.call('UNLINK', mkey) end
    return { '0', '0', 0, 0 }
  end
  local sorted = f.type == 'sorted_feed'

  local function fingerprint()
    local len = sorted and redis.call('LLEN', f.ids) or redis.call('ZCARD', f.ids)
    return table.concat({ num(f.epoch or 0), num(f.rev),
      redis.call('GET', f.publishes) or '0', redis.call('HLEN', f.items), len }, ':')
  end
  local mode = ARGV[1]
  if mode == 'auto' then mode = sorted and 'full' or 'sweep' end
  if not sorted then
    local page = math.floor(tonumber(ARGV[2]) or PAGE)
    if page < 1 then page = 1 elseif page > MAX_PAGE then page = MAX_PAGE end
    return paged(f, mkey, mode, page)
  end
  -- A sorted feed: compared whole.
  if mode == 'sweep' and not f.new_epoch and f.epoch then
    if redis.call('HGET', mkey, 'fp') == fingerprint() then
      return { num(f.epoch), num(f.rev), 0, 0 }
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
    return { num(f.epoch or 0), num(f.rev), 0, 0 }
  end
  if #changes == 0 and f.new_epoch then
    -- Nothing to record, and no epoch to start for it: the next write does.
    redis.call('UNLINK', mkey)
    local epoch, rev = f.epoch or 0, f.rev
    if f.reset_history then epoch, rev = 0, 0 end
    return { num(epoch), num(rev), 0, 0 }
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
    redis.call('UNLINK', mkey)
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
  return { num(f.epoch), num(f.rev), #changes, 0 }
end)
