-- prelude.lua: shared helpers of the thoonk-sync feed scripts.
--
-- It opens the Redis Functions library `thoonk` (see src/library.rs): it
-- runs once when the library is loaded, and declares only local functions
-- and constants, shared by every function of the library. State of one call
-- lives in the per-call context `call` (begin_call), never in a module-level
-- variable, which would survive from one call to the next. A script that
-- writes follows three phases, and so must every script built on this
-- prelude (the job layer's included):
--   1. reads and checks: check_* functions; they write nothing and fail with
--      fail(CODE, message), which becomes an error reply "CODE message";
--   2. writes: apply_* functions; they cannot fail on valid input;
--   3. flush(): every PUBLISH (and SPUBLISH) queued by the writes, in order.
--
-- A feed occupies 8 consecutive keys of the call (see feed_at), all of the form
-- <prefix>:<feed name>, so a `{hash tag}` in the name puts them in one
-- Redis Cluster slot. The feed name is read back from the first of them.
--
-- Values: epochs are integers below 2^53 (microseconds since 1970 at the
-- epoch's start), revisions are integers; both are formatted with %d (an
-- integer conversion: %.0f goes through the C library's float printing,
-- several times slower).

local FEED_KEY_PREFIXES = {
  'feed.config:', 'feed.ids:', 'feed.items:', 'feed.publishes:',
  'feed.idincr:', 'feed.rev:', 'feed.itemrevs:', 'feed.log:',
}
local FEED_KEY_COUNT = 8
local DEFAULT_RETENTION = 10000
local NOTICE_PREFIX = 'feed.changes:'
-- Sharded channel of every notice of the feeds that share a hash tag:
-- feed.tag.changes:{<tag>} lies in the tag's slot (see docs/REDIS.md).
local TAG_NOTICE_PREFIX = 'feed.tag.changes:'
local HMGET_CHUNK = 1000

-- Aborts the read-and-check phase with an error reply "CODE message".
local FAIL_MARK = 'thoonk-fail:'
local function fail(code, message)
  error(FAIL_MARK .. code .. ' ' .. message, 0)
end

-- Runs a script body; a fail() raised in it becomes a plain error reply
-- "CODE message"; any other error propagates unchanged.
local function run(body)
  local ok, result = pcall(body)
  if ok then return result end
  if type(result) == 'string' and string.sub(result, 1, #FAIL_MARK) == FAIL_MARK then
    return redis.error_reply(string.sub(result, #FAIL_MARK + 1))
  end
  error(result, 0)
end

local function num(n)
  return string.format('%d', n)
end

-- The per-call context: the Redis server time once read (a call is
-- atomic, so every change it makes happens at the same instant) and the
-- notices queued for flush(). Every function of the library starts with
-- begin_call(), so nothing of one call is seen by the next. `pending` is
-- flat, three slots per message (channel, message, sharded), `n` the slots
-- in use: queuing allocates no table per message.
local call = { clock = false, history = false, pending = {}, n = 0 }
local function begin_call()
  call.clock = false
  call.history = false
  call.n = 0
end

local function now()
  if not call.clock then call.clock = redis.call('TIME') end
  return call.clock
end
-- Milliseconds and microseconds since 1970 (numbers).
local function now_ms()
  local t = now()
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function now_us()
  local t = now()
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local MAX_NAME_LEN = 256

-- Checks a feed name or item id: 1..256 bytes, no NUL (Thoonk's field
-- separator); feed names also hold no glob character (* ? [ ] \\).
local function check_name(what, value, is_feed)
  if value == nil or value == '' then fail('BADNAME', what .. ' is empty') end
  if #value > MAX_NAME_LEN then
    fail('BADNAME', what .. ' is ' .. #value .. ' bytes long; the limit is ' .. MAX_NAME_LEN)
  end
  -- One search for a feed name (NUL or a glob character), then which.
  if string.find(value, is_feed and '[%z%*%?%[%]\\]' or '%z') then
    if string.find(value, '\0', 1, true) then fail('BADNAME', what .. ' contains a NUL byte') end
    fail('BADNAME', what .. ' contains a glob character')
  end
end

-- The hash tag of a name as Redis Cluster reads it: the text between the
-- first `{` and the next `}`, when not empty; nil otherwise.
local function hash_tag(name)
  if not string.find(name, '{', 1, true) then return nil end
  local tag = string.match(name, '^[^{]*{([^}]*)}')
  if tag and tag ~= '' then return tag end
  return nil
end

-- The 7 keys after feed.config:<name>, joined by NUL as feed_at compares
-- them: one string built and compared, not seven (a name holds no NUL, so
-- the separators cannot be forged).
local function other_keys(name)
  return 'feed.ids:' .. name .. '\0feed.items:' .. name .. '\0feed.publishes:' .. name
    .. '\0feed.idincr:' .. name .. '\0feed.rev:' .. name .. '\0feed.itemrevs:' .. name
    .. '\0feed.log:' .. name
end

-- The feed whose keys start at keys[base] (the call's keys); checks the 8
-- key names. The table is built whole, with the fields the reads and
-- writes set, so that it is sized once.
local function feed_at(keys, base)
  local first = keys[base]
  if not first or string.sub(first, 1, 12) ~= 'feed.config:' then
    fail('BADKEYS', 'KEYS[' .. base .. '] must be feed.config:<name>')
  end
  local name = string.sub(first, 13)
  check_name('feed name', name, true)
  if not keys[base + FEED_KEY_COUNT - 1]
      or table.concat(keys, '\0', base + 1, base + FEED_KEY_COUNT - 1) ~= other_keys(name) then
    for i = 2, FEED_KEY_COUNT do
      if keys[base + i - 1] ~= FEED_KEY_PREFIXES[i] .. name then
        fail('BADKEYS', 'KEYS[' .. (base + i - 1) .. '] must be ' .. FEED_KEY_PREFIXES[i] .. name)
      end
    end
  end
  return {
    name = name, tag = hash_tag(name),
    config = first, ids = keys[base + 1], items = keys[base + 2], publishes = keys[base + 3],
    idincr = keys[base + 4], rev_key = keys[base + 5], itemrevs = keys[base + 6],
    log = keys[base + 7],
    -- set by read_feed (type, epoch and history stay nil until read)
    max_length = 0, retention = DEFAULT_RETENTION, rev = 0, new_epoch = false,
    reset_history = false, history_changed = false, record_history = false,
    epoch_text = false,
    -- set by the writes
    writing = false, rev_text = false, notice_head = false, tag_channel = false,
  }
end

-- Reads a feed's config and revision state into f (no writes).
-- f.type is false when the feed does not exist. The epoch lives in the
-- config hash (field `epoch`), so a classic delete or FLUSHALL, which drop
-- that hash, also drops the epoch. f.new_epoch is set when the next write
-- must start a new epoch: no epoch yet (new feed, feed created by a classic
-- process, or recreated after a classic delete), a change log that should
-- exist but is gone, or a log whose revision counter is gone.
-- f.reset_history additionally drops the old log and item revisions and
-- restarts the revision at 0.
--
-- On a Redis Cluster node an epoch also belongs to the replication history
-- its writes were made in (INFO's master_replid, kept in the config field
-- `history`): a replica promoted at failover, or a primary restarted, has a
-- new one, and may lack writes that were acknowledged (replication and
-- `everysec` fsync are asynchronous), whose revisions new writes would
-- reuse. So the feed goes on under a new epoch (f.history_changed; the
-- revision continues) and clients that saw the lost revisions start over
-- from a snapshot instead of silently diverging.
-- Whether this Redis runs as a cluster node: fixed for the life of the
-- process (cluster-enabled cannot change without a restart, which starts a
-- new Lua state), so read once, at the library's first call that needs it.
-- The only value the library keeps between calls.
local cluster_enabled
-- The replication history, read once per call (a call may read several
-- feeds), and only on a cluster node: a single Redis makes no INFO call.
local function cluster_history()
  if cluster_enabled == nil then
    cluster_enabled = string.find(redis.call('INFO', 'cluster'), 'cluster_enabled:1', 1, true) ~= nil
  end
  if not cluster_enabled then return nil end
  if not call.history then
    call.history = string.match(redis.call('INFO', 'replication'), 'master_replid:(%x+)')
  end
  return call.history
end

-- The id of this Redis process (INFO's run_id), recorded with each new
-- epoch (config field `epoch_run`): see epoch.lua.
local function run_id()
  return string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
end

local function read_feed(f)
  -- `history` matters only for a name with a hash tag (see below).
  local cfg
  if f.tag then
    cfg = redis.call('HMGET', f.config, 'type', 'max_length', 'retention', 'epoch', 'history')
  else
    cfg = redis.call('HMGET', f.config, 'type', 'max_length', 'retention', 'epoch')
  end
  f.type = cfg[1]
  f.max_length = tonumber(cfg[2]) or 0
  if f.max_length < 0 then f.max_length = 0 end
  f.retention = tonumber(cfg[3]) or DEFAULT_RETENTION
  if f.retention < 1 then f.retention = 1 end
  f.epoch = tonumber(cfg[4])
  -- The epoch as stored (by begin_writes, with num): the text replies and
  -- notices carry, not formatted again.
  f.epoch_text = f.epoch and cfg[4]
  f.rev = tonumber(redis.call('GET', f.rev_key)) or 0
  f.new_epoch = false
  f.reset_history = false
  if not f.epoch then
    f.new_epoch = true
    f.reset_history = true
  elseif redis.call('EXISTS', f.log) == 0 then
    if f.rev > 0 then f.new_epoch = true end
  elseif f.rev == 0 then
    f.new_epoch = true
    f.reset_history = true
  end
  if f.reset_history then f.rev = 0 end
  -- (A feed name without a tag cannot live on a cluster: no INFO call.)
  f.history = f.tag and cluster_history()
  f.history_changed = f.history ~= nil and cfg[5] ~= false and cfg[5] ~= f.history
    and not f.new_epoch
  if f.history_changed then f.new_epoch = true end
  f.record_history = f.history ~= nil and cfg[5] ~= f.history
  return f
end

-- Checks that the feed exists and is a feed or sorted feed.
local function check_feed(f)
  read_feed(f)
  if not f.type then
    fail('NOFEED', 'feed ' .. f.name .. ' does not exist')
  end
  if f.type ~= 'feed' and f.type ~= 'sorted_feed' then
    fail('FEEDTYPE', f.type)
  end
  return f
end

-- ---------------------------------------------------------------- events

-- Queues a PUBLISH, or with `sharded` an SPUBLISH (to a channel in the
-- slot of the script's keys).
local function queue(channel, message, sharded)
  local pending, n = call.pending, call.n
  pending[n + 1] = channel
  pending[n + 2] = message
  pending[n + 3] = sharded or false
  call.n = n + 3
end

-- Phase 3: sends every queued message in order. An SPUBLISH is called
-- protected: a Redis before 7.0 has none, and its notices still go out on
-- the classic channel.
local function flush()
  local pending, n = call.pending, call.n
  for i = 1, n, 3 do
    if pending[i + 2] then
      redis.pcall('SPUBLISH', pending[i], pending[i + 1])
    else
      redis.call('PUBLISH', pending[i], pending[i + 1])
    end
  end
  call.n = 0
  -- A large batch's messages are not kept alive until the next one.
  if n > 300 then call.pending = {} end
end


-- Stored item text as JSON text: the text itself when it is JSON, else a
-- JSON string holding it (an item written by a foreign Thoonk process).
local function json_text(text)
  if pcall(cjson.decode, text) then return text end
  return cjson.encode(text)
end

local function position_json(pos, rel)
  if pos == 'begin' or pos == 'end' then return '"' .. pos .. '"' end
  return '{"' .. pos .. '":' .. cjson.encode(rel) .. '}'
end

-- The classic position grammar of feed.position:N.
local function classic_position(pos, rel)
  if pos == 'begin' then return 'begin:' end
  if pos == 'end' then return ':end' end
  if pos == 'before' then return ':' .. rel end
  return rel .. ':'
end

-- ---------------------------------------------------------------- writes

-- Starts a feed's writes: a new epoch (and, without trusted state, a fresh
-- history) when read_feed asked for one.
local function begin_writes(f)
  if f.writing then return end
  f.writing = true
  if f.new_epoch then
    local epoch = now_us()
    if f.epoch and epoch <= f.epoch then epoch = f.epoch + 1 end
    f.epoch = epoch
    f.epoch_text = num(epoch)
    if f.reset_history then
      redis.call('DEL', f.log, f.itemrevs, f.rev_key)
      f.reset_history = false
    end
    redis.call('HSET', f.config, 'epoch', f.epoch_text, 'epoch_run', run_id())
    f.new_epoch = false
    f.history_changed = false
  end
  if f.record_history then
    redis.call('HSET', f.config, 'history', f.history)
    f.record_history = false
  end
end

-- Records one change: the next revision, one change-log entry with id
-- <rev>-0, the item's revision, and the change notice (queued), built as
-- one string in one concatenation. Arguments: the change's op and item id;
-- item (text, trusted JSON), pos, rel, prev (stored text) and job (or
-- '') when the change has them; `adopted` marks the notice of a change
-- the adopter (adopt.lua) recorded. Returns the revision.
local function record(f, op, id, item, pos, rel, prev, job, adopted)
  begin_writes(f)
  local rev_n = f.rev + 1
  f.rev = rev_n
  local rev = num(rev_n)
  f.rev_text = rev
  redis.call('SET', f.rev_key, rev)
  if not f.notice_head then
    -- begin_writes has fixed the epoch for the rest of the call.
    f.notice_head = '{"feed":' .. cjson.encode(f.name) .. ',"epoch":' .. f.epoch_text .. ',"rev":'
    f.tag_channel = f.tag and (TAG_NOTICE_PREFIX .. '{' .. f.tag .. '}')
  end
  if job == '' then job = nil end
  -- The change-log entry. Approximate trimming (whole stream nodes) keeps
  -- at least `retention` entries at a fraction of the cost of exact
  -- trimming.
  local entry = { 'XADD', f.log, 'MAXLEN', '~', f.retention, rev .. '-0', 'op', op, 'id', id,
    false, false, false, false, false, false, false, false, false, false }
  local n = 10
  if item then entry[n + 1] = 'item'; entry[n + 2] = item; n = n + 2 end
  if pos then entry[n + 1] = 'pos'; entry[n + 2] = pos; n = n + 2 end
  if pos and rel then entry[n + 1] = 'rel'; entry[n + 2] = rel; n = n + 2 end
  if prev then entry[n + 1] = 'prev'; entry[n + 2] = prev; n = n + 2 end
  if job then entry[n + 1] = 'job'; entry[n + 2] = job; n = n + 2 end
  redis.call(unpack(entry, 1, n))
  if op == 'retract' then
    redis.call('HDEL', f.itemrevs, id)
  else
    redis.call('HSET', f.itemrevs, id, rev)
  end
  -- The notice: the log entry as JSON (docs/REDIS.md, ChangeNotice in
  -- src/feeds/model.rs).
  local notice = f.notice_head .. rev .. ',"change":{"op":"' .. op .. '","id":' .. cjson.encode(id)
    .. (item and ',"item":' or '') .. (item or '')
    .. (pos and ',"position":' or '') .. (pos and position_json(pos, rel) or '')
    .. (prev and ',"prev":' or '') .. (prev and json_text(prev) or '')
    .. (job and ',"job":' or '') .. (job and cjson.encode(job) or '')
    .. (adopted and '},"adopted":true}' or '}}')
  queue(NOTICE_PREFIX .. f.name, notice)
  -- A feed with a hash tag also announces on its tag's sharded channel,
  -- which a gateway running sharded fan-out subscribes to.
  if f.tag_channel then queue(f.tag_channel, notice, true) end
  return rev_n
end

-- ---------------------------------------------------------------- checks

local function item_exists(f, id)
  if f.type == 'feed' then
    return redis.call('ZSCORE', f.ids, id) ~= false
  end
  return redis.call('HEXISTS', f.items, id) == 1
end

-- The oldest items of a time-ordered feed beyond max_length, leaving room
-- for `adding` new items and never counting `keep` (the item being written).
local NO_TRIMS = {} -- never written to
local function check_trim(f, adding, keep)
  if f.type ~= 'feed' or f.max_length <= 0 then return NO_TRIMS end
  local excess = redis.call('ZCARD', f.ids) + adding - f.max_length
  if excess <= 0 then return NO_TRIMS end
  local trims = {}
  local oldest = redis.call('ZRANGE', f.ids, 0, excess)
  for i = 1, #oldest do
    if #trims == excess then break end
    if oldest[i] ~= keep then
      trims[#trims + 1] = { id = oldest[i], prev = redis.call('HGET', f.items, oldest[i]) }
    end
  end
  return trims
end

local function check_position(f, id, pos, rel)
  if pos == '' then pos = 'end' end
  if pos == 'begin' or pos == 'end' then return pos, nil end
  if pos ~= 'before' and pos ~= 'after' then
    fail('BADPOS', 'position must be begin, end, before or after, not ' .. pos)
  end
  check_name('reference item id', rel)
  if rel == id then
    fail('BADPOS', 'an item cannot be placed ' .. pos .. ' itself')
  end
  if redis.call('HEXISTS', f.items, rel) == 0 then
    fail('NOREL', 'the reference item ' .. rel .. ' does not exist in feed ' .. f.name)
  end
  return pos, rel
end

-- Plans a publish. mode: 'upsert' (new id: insert; existing id: edit),
-- 'insert' (the id must be new) or 'edit' (the id must exist). An empty id
-- is replaced by gen_id, or when that is empty too by the next number of
-- INCR feed.idincr:N that is not an item id yet (as classic sorted feeds do).
-- A position applies to new items only; a time-ordered feed only appends.
local function check_publish(f, mode, id, gen_id, item, pos, rel, job)
  check_feed(f)
  -- Built whole (sized once); prev and pos stay false when unset.
  local p = { f = f, item = item, job = job, id = id, generate = false, exists = false,
    prev = false, pos = false, rel = nil, trims = NO_TRIMS }
  if id == '' then
    if mode == 'edit' then fail('BADARG', 'edit needs an item id') end
    if gen_id ~= '' then id = gen_id else p.generate = true end
  end
  if not p.generate then check_name('item id', id) end
  p.id = id
  p.exists = (not p.generate) and item_exists(f, id)
  if mode == 'edit' and not p.exists then
    fail('NOITEM', 'item ' .. id .. ' does not exist in feed ' .. f.name)
  end
  if mode == 'insert' and p.exists then
    fail('EXISTS', 'item ' .. id .. ' already exists in feed ' .. f.name)
  end
  if p.exists then
    p.prev = redis.call('HGET', f.items, id)
  end
  if f.type == 'feed' then
    if pos ~= '' and pos ~= 'end' then
      fail('BADPOS', 'feed ' .. f.name .. ' is time-ordered: items can only be added at the end')
    end
    p.pos = 'end'
    p.trims = check_trim(f, p.exists and 0 or 1, id)
  else
    p.trims = NO_TRIMS
    if not p.exists then
      p.pos, p.rel = check_position(f, id, pos, rel)
    end
  end
  return p
end

local function check_retract(f, id, job)
  check_feed(f)
  check_name('item id', id)
  if not item_exists(f, id) then
    fail('NOITEM', 'item ' .. id .. ' does not exist in feed ' .. f.name)
  end
  return { f = f, id = id, prev = redis.call('HGET', f.items, id), job = job }
end

local function check_move(f, id, pos, rel, job)
  check_feed(f)
  if f.type ~= 'sorted_feed' then
    fail('FEEDTYPE', f.type)
  end
  check_name('item id', id)
  if not item_exists(f, id) then
    fail('NOITEM', 'item ' .. id .. ' does not exist in feed ' .. f.name)
  end
  local p = { f = f, id = id, job = job }
  if pos == '' then fail('BADPOS', 'move needs a position') end
  p.pos, p.rel = check_position(f, id, pos, rel)
  return p
end

-- ---------------------------------------------------------------- applies

local function apply_retract_one(f, id, prev, job)
  if f.type == 'feed' then
    redis.call('ZREM', f.ids, id)
  else
    redis.call('LREM', f.ids, 1, id)
  end
  redis.call('HDEL', f.items, id)
  queue('feed.retract:' .. f.name, id)
  return record(f, 'retract', id, nil, nil, nil, prev or nil, job)
end

local function apply_trims(f, trims, job)
  for i = 1, #trims do
    apply_retract_one(f, trims[i].id, trims[i].prev, job)
  end
end

local function place(f, id, pos, rel)
  if pos == 'begin' then
    redis.call('LPUSH', f.ids, id)
  elseif pos == 'end' then
    redis.call('RPUSH', f.ids, id)
  else
    redis.call('LINSERT', f.ids, pos == 'before' and 'BEFORE' or 'AFTER', rel, id)
  end
end

-- The score of an item published now in a time-ordered feed: the Redis
-- server time in milliseconds, or the newest score + 1 when that is not
-- later, so that the zset order is always the publish order (ties would
-- otherwise sort by id, and a client replaying the log would disagree).
local function next_score(f)
  local score = now_ms()
  local newest = redis.call('ZRANGE', f.ids, -1, -1, 'WITHSCORES')
  local top = newest[2] and tonumber(newest[2])
  if top and top >= score then score = math.floor(top) + 1 end
  return num(score)
end

-- Applies a planned publish; returns the revision and the item id.
local function apply_publish(p)
  local f = p.f
  begin_writes(f)
  apply_trims(f, p.trims, p.job)
  local id = p.id
  if p.generate then
    repeat
      id = tostring(redis.call('INCR', f.idincr))
    until not item_exists(f, id)
  end
  local op = p.exists and 'edit' or 'publish'
  local message = id .. '\0' .. p.item
  if f.type == 'feed' then
    redis.call('ZADD', f.ids, next_score(f), id)
    redis.call('INCR', f.publishes)
    redis.call('HSET', f.items, id, p.item)
    queue(p.exists and ('feed.edit:' .. f.name) or ('feed.publish:' .. f.name), message)
  else
    if not p.exists then place(f, id, p.pos, p.rel) end
    redis.call('INCR', f.publishes)
    redis.call('HSET', f.items, id, p.item)
    queue('feed.publish:' .. f.name, message)
    if not p.exists then
      queue('feed.position:' .. f.name, id .. '\0' .. classic_position(p.pos, p.rel))
    end
  end
  local rev = record(f, op, id, p.item, p.pos, p.rel, p.prev or nil, p.job)
  return rev, id, op
end

local function apply_retract(p)
  begin_writes(p.f)
  return apply_retract_one(p.f, p.id, p.prev, p.job)
end

local function apply_move(p)
  local f = p.f
  begin_writes(f)
  redis.call('LREM', f.ids, 1, p.id)
  place(f, p.id, p.pos, p.rel)
  queue('feed.position:' .. f.name, p.id .. '\0' .. classic_position(p.pos, p.rel))
  return record(f, 'position', p.id, nil, p.pos, p.rel, nil, p.job)
end

-- One write of a job (job_apply.lua, job_apply_batch.lua) on feed f: kind
-- is upsert | insert | edit | retract | move. check_write is its check
-- (BADARG for another kind), apply_write applies what the check returned
-- and returns the write's revision.
local function check_write(f, kind, id, item, pos, rel, job)
  if kind == 'upsert' or kind == 'insert' or kind == 'edit' then
    return check_publish(f, kind, id, '', item, pos, rel, job)
  elseif kind == 'retract' then
    return check_retract(f, id, job)
  elseif kind == 'move' then
    return check_move(f, id, pos, rel, job)
  end
  fail('BADARG', 'unknown write kind ' .. kind)
end

local function apply_write(kind, p)
  if kind == 'retract' then return apply_retract(p) end
  if kind == 'move' then return apply_move(p) end
  local rev = apply_publish(p)
  return rev
end

-- ---------------------------------------------------------------- reads

-- The items of a feed in order: ids, values and revisions (three lists),
-- from rank `first` (0-based) on, at most `count` of them (0: all).
local function read_items(f, first, count)
  local last = -1
  if count > 0 then last = first + count - 1 end
  local ids
  if f.type == 'feed' then
    ids = redis.call('ZRANGE', f.ids, first, last)
  elseif f.type == 'sorted_feed' then
    ids = redis.call('LRANGE', f.ids, first, last)
  else
    return {}, {}, {}
  end
  local items, revs = {}, {}
  -- HMGET in chunks: Lua's unpack() is limited to a few thousand values.
  for i0 = 1, #ids, HMGET_CHUNK do
    local i1 = math.min(i0 + HMGET_CHUNK - 1, #ids)
    local chunk = { unpack(ids, i0, i1) }
    local values = redis.call('HMGET', f.items, unpack(chunk))
    local item_revs = redis.call('HMGET', f.itemrevs, unpack(chunk))
    for i = 1, #chunk do
      items[i0 + i - 1] = values[i]
      revs[i0 + i - 1] = item_revs[i]
    end
  end
  return ids, items, revs
end

-- How many ids the feed holds, and its publish counter: with the epoch and
-- revision, what the pages of one snapshot must all be read at.
local function page_pin(f)
  local total = 0
  if f.type == 'feed' then
    total = redis.call('ZCARD', f.ids)
  elseif f.type == 'sorted_feed' then
    total = redis.call('LLEN', f.ids)
  end
  return total, redis.call('GET', f.publishes) or '0'
end

-- A snapshot reply: { epoch, rev, ids, items, revs, total, publishes },
-- the ids from rank `first` on, at most `count` (0: all), `total` the
-- number of ids in the feed and `publishes` its publish counter. A feed
-- without a trusted history (no epoch yet) reads as epoch 0, revision 0.
-- `pin`, when given ({ epoch, rev, total, publishes } as an earlier page
-- replied), must still hold, or the call fails with CHANGED: a large feed is
-- read in pages of one state, each call short.
local function snapshot_reply(f, first, count, pin)
  if f.type and f.type ~= 'feed' and f.type ~= 'sorted_feed' then
    fail('FEEDTYPE', f.type)
  end
  local epoch, rev = f.epoch or 0, f.rev
  if f.reset_history then epoch, rev = 0, 0 end
  local total, publishes = page_pin(f)
  if pin and (pin[1] ~= num(epoch) or pin[2] ~= num(rev) or pin[3] ~= tostring(total)
      or pin[4] ~= publishes) then
    fail('CHANGED', 'feed ' .. f.name .. ' changed since the first page')
  end
  local ids, items, revs = read_items(f, first, count)
  for i = 1, #revs do
    if not revs[i] then revs[i] = '0' end
  end
  return { num(epoch), num(rev), ids, items, revs, total, publishes }
end

-- The revision of the oldest change-log entry, or nil for an empty log.
local function oldest_logged(f)
  local first = redis.call('XRANGE', f.log, '-', '+', 'COUNT', 1)
  if #first == 0 then return nil end
  return tonumber(string.match(first[1][1], '^(%d+)-'))
end

-- Whether item `id` of feed f changed after revision `base`, where that is
-- decided without reading the log's entries: false when neither the feed
-- nor the item changed since; when the log no longer reaches back to
-- `base`, whether the item has a newer revision (a conflict). nil when only
-- the entries can tell (job_apply.lua, job_apply_batch.lua: who changed it).
local function changed_unless_logged(f, id, base)
  if base >= f.rev then return false end
  local item_rev = tonumber(redis.call('HGET', f.itemrevs, id))
  if item_rev and item_rev <= base then return false end
  local oldest = oldest_logged(f)
  if not oldest or oldest > base + 1 then
    return item_rev ~= nil
  end
  return nil
end

-- The client id of a change id "<client>:<seq>": client ids hold no ':',
-- the sequence may.
local function client_of(job)
  return string.match(job, '^([^:]*):') or job
end
