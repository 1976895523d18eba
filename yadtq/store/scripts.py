"""The task state machine, as Lua scripts that Redis runs atomically.

Every status change of a task happens in exactly one of these scripts, and each one also appends to
the task's history and publishes the change on the events channel. Atomicity is what makes the
guarantees hold: two workers cannot both claim a task, a result is written at most once (only by
the worker holding the current attempt), and a task in a final state is never claimed again.

::

    (submit) -> queued -> processing -> success | failed
                  ^          |  \\-> retrying -(due)-> processing ...
                  |          |        (infrastructure errors, or op errors when retry_errors)
                  +----------+ released on shutdown, or requeued by the reaper when its worker died
    queued | retrying -> cancelled
"""

from __future__ import annotations

# Shared helpers, prepended to every script. ``ns`` is the key namespace so scripts that must find
# other tasks' or workers' keys (the reaper) can build them; that is fine on a single Redis.
_PRELUDE = """
local function event(channel, tbl)
  redis.call('PUBLISH', channel, cjson.encode(tbl))
end
-- ``fields``: more field/value pairs of the record to set, in the same command as the status
local function transition(ns, id, status, now, worker, attempt, note, fields)
  local tkey = ns .. ':task:' .. id
  redis.call('HSET', tkey, 'status', status, 'updated_at', now, unpack(fields or {}))
  local entry = {status=status, at=tonumber(now), worker=worker, attempt=tonumber(attempt), note=note}
  redis.call('RPUSH', tkey .. ':history', cjson.encode(entry))
  entry['type'] = 'task'
  entry['id'] = id
  event(ns .. ':events', entry)
end
local function wake(ns, id)
  local dkey = ns .. ':task:' .. id .. ':done'
  redis.call('RPUSH', dkey, '1')
  redis.call('EXPIRE', dkey, 3600)
end
local function keep(ns, id, ttl)
  if tonumber(ttl) > 0 then
    redis.call('EXPIRE', ns .. ':task:' .. id, ttl)
    redis.call('EXPIRE', ns .. ':task:' .. id .. ':history', ttl)
  end
end
-- A worker lost a task it held (it died, or stopped listing it): count it, and name it in the
-- worker's ``lost_tasks`` (",id,id", the newest 1 KB) so the failure history can say which.
local function lose(ns, owner, id)
  local wkey = ns .. ':worker:' .. owner
  redis.call('HINCRBY', wkey, 'lost', 1)
  local lost = (redis.call('HGET', wkey, 'lost_tasks') or '') .. ',' .. id
  if #lost > 1024 then lost = string.sub(lost, string.find(lost, ',', #lost - 1024, true)) end
  redis.call('HSET', wkey, 'lost_tasks', lost)
end
local function create(ns, id, op, args, kwargs, submitted_at, message, max_retries, now)
  redis.call('ZADD', ns .. ':tasks', submitted_at, id)
  transition(ns, id, 'queued', now, nil, 0, nil, {'id', id, 'op', op, 'args', args, 'kwargs', kwargs,
    'submitted_at', submitted_at, 'message', message, 'attempts', 0, 'max_retries', max_retries})
end
"""

#: ARGV: ns, id, op, args, kwargs, submitted_at, message, max_retries, now -> 1 created, 0 existed
SUBMIT = """
local ns, id = ARGV[1], ARGV[2]
if redis.call('EXISTS', ns .. ':task:' .. id) == 1 then return 0 end
create(ns, id, ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9])
return 1
"""

#: Seconds a withdrawn task's tombstone is kept: far longer than any message can linger in Kafka.
WITHDRAWN_TTL = 7 * 24 * 3600

#: ARGV: ns, id -> 1 if the record of a task that never left the client was removed
#: The client calls this when Kafka did not acknowledge a message in time, and tells its caller the
#: submit failed. A frozen broker may still append that message later (the request sat in its
#: socket), so the id also gets a tombstone, ``NS:withdrawn:<id>``: the claim script skips a message
#: that carries it, so a submit that raised never runs and never leaves a record, even if delivered.
UNSUBMIT = (
    """
local ns, id = ARGV[1], ARGV[2]
local tkey = ns .. ':task:' .. id
local st = redis.call('HMGET', tkey, 'status', 'attempts')
if st[1] and (st[1] ~= 'queued' or tonumber(st[2]) ~= 0) then return 0 end
redis.call('SET', ns .. ':withdrawn:' .. id, '1', 'EX', """
    + str(WITHDRAWN_TTL)
    + """)
if not st[1] then return 0 end
redis.call('DEL', tkey, tkey .. ':history')
redis.call('ZREM', ns .. ':tasks', id)
return 1
"""
)

#: ARGV: ns, id, worker, now, heartbeat_timeout, op, args, kwargs, submitted_at, message, max_retries, mode
#: -> {'claimed', attempt} | {'done', status} | {'busy', owner} | {'gave_up', attempts}
#: ``mode`` is the worker's delivery semantics: '' (effectively once: skip what is final or held
#: by a live worker), 'force' (at least once: claim every delivery, no dedupe) or 'once' (at most
#: once: no retries, so the reaper fails rather than requeues the task of a dead worker).
CLAIM = """
local ns, id, me, now, timeout, mode = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[12]
local tkey = ns .. ':task:' .. id
local st = redis.call('HMGET', tkey, 'status', 'worker', 'attempts', 'max_retries')
local status, owner, attempts, max_retries = st[1], st[2], tonumber(st[3] or '0'), tonumber(st[4] or ARGV[11])
if not status then
  -- withdrawn: its submit raised, so it must never run (see UNSUBMIT)
  if redis.call('EXISTS', ns .. ':withdrawn:' .. id) == 1 then return {'done', 'withdrawn'} end
  -- a message from a producer that never wrote the record (any Kafka client may submit)
  create(ns, id, ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[4])
  status, attempts, max_retries = 'queued', 0, tonumber(ARGV[11])
end
if mode == 'force' then status = 'queued' end
if status == 'success' or status == 'failed' or status == 'cancelled' then return {'done', status} end
local note = nil
if mode == 'once' then redis.call('HSET', tkey, 'max_retries', 0) end
if status == 'processing' and owner and owner ~= '' then
  local beat = tonumber(redis.call('ZSCORE', ns .. ':workers', owner) or '0')
  if owner ~= me and now - beat <= timeout then return {'busy', owner} end
  note = 'took over from ' .. owner .. ', which stopped heartbeating'
  lose(ns, owner, id)
  if attempts >= max_retries + 1 then
    redis.call('HDEL', ns .. ':running', id)
    transition(ns, id, 'failed', now, nil, attempts, 'no retries left', {'finished_at', now, 'reason', 'worker_lost',
      'error', 'worker ' .. owner .. ' died during attempt ' .. attempts .. '; no retries left'})
    wake(ns, id)
    return {'gave_up', attempts}
  end
end
-- a first claim has no outcome to clear and was never scheduled: two calls saved on the common path
if attempts > 0 or mode == 'force' then redis.call('HDEL', tkey, 'finished_at') end
if st[1] == 'retrying' then redis.call('ZREM', ns .. ':scheduled', id) end
attempts = attempts + 1
redis.call('HSET', ns .. ':running', id, me)
transition(ns, id, 'processing', now, me, attempts, note,
  {'worker', me, 'attempts', attempts, 'started_at', now, 'next_attempt_at', ''})
return {'claimed', attempts}
"""

_OWNED = """
local ns, id, me, attempt = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local tkey = ns .. ':task:' .. id
local st = redis.call('HMGET', tkey, 'status', 'worker', 'attempts')
if st[1] ~= 'processing' or st[2] ~= me or tonumber(st[3]) ~= attempt then return 0 end
redis.call('HDEL', ns .. ':running', id)
"""

#: ARGV: ns, id, worker, attempt, status, result, error, reason, now, ttl -> 1 stored, 0 not ours
FINISH = (
    _OWNED
    + """
local status, now = ARGV[5], ARGV[9]
redis.call('HINCRBY', ns .. ':worker:' .. me, status == 'success' and 'processed' or 'failed', 1)
transition(ns, id, status, now, me, attempt, ARGV[8] ~= '' and ARGV[8] or nil,
  {'finished_at', now, 'result', ARGV[6], 'error', ARGV[7], 'reason', ARGV[8]})
wake(ns, id)
keep(ns, id, ARGV[10])
return 1
"""
)

#: ARGV: ns, id, worker, attempt, due, error, reason, now -> 1 scheduled, 0 not ours
RETRY = (
    _OWNED
    + """
redis.call('ZADD', ns .. ':scheduled', ARGV[5], id)
transition(ns, id, 'retrying', ARGV[8], me, attempt, ARGV[6],
  {'next_attempt_at', ARGV[5], 'error', ARGV[6], 'reason', ARGV[7], 'worker', ''})
return 1
"""
)

#: ARGV: ns, id, worker, attempt, now, note -> 1 handed back, 0 not ours
RELEASE = (
    _OWNED
    + """
transition(ns, id, 'queued', ARGV[5], me, attempt, ARGV[6], {'worker', ''})
return 1
"""
)

#: ARGV: ns, id, now -> the status after the call ('cancelled', or the status that prevented it)
CANCEL = """
local ns, id, now = ARGV[1], ARGV[2], ARGV[3]
local tkey = ns .. ':task:' .. id
local status = redis.call('HGET', tkey, 'status')
if not status then return 'unknown' end
if status == 'cancelled' then return 'cancelled' end  -- cancelling twice is not an error
if status ~= 'queued' and status ~= 'retrying' then return status end
redis.call('ZREM', ns .. ':scheduled', id)
transition(ns, id, 'cancelled', now, nil, redis.call('HGET', tkey, 'attempts'), nil,
  {'finished_at', now, 'error', 'cancelled before it started', 'reason', 'cancelled'})
wake(ns, id)
return 'cancelled'
"""

#: ARGV: ns, id, op, error, now, message -> 1 if the task was marked failed
REJECT = """
local ns, id, now = ARGV[1], ARGV[2], ARGV[5]
local tkey = ns .. ':task:' .. id
local status = redis.call('HGET', tkey, 'status')
if status and status ~= 'queued' then return 0 end
if not status then
  create(ns, id, ARGV[3], '[]', '{}', now, ARGV[6], 0, now)
end
transition(ns, id, 'failed', now, nil, 0, 'dead-lettered', {'finished_at', now, 'error', ARGV[4], 'reason', 'rejected'})
wake(ns, id)
return 1
"""

#: ARGV: ns, name, now, state, current_task, pid, host, partitions, history_len, started_at, rebalances,
#: in_flight, max_delivery_count -> the state before. A beat timed before the worker was declared
#: dead is dropped and answers ``dead``: the worker was stopped (SIGSTOP, a VM pause) between reading
#: its clock and sending, and recording that old time would make it look silent again at once, so the
#: reaper would declare it dead a second time for one pause. Its next beat, timed after the pause,
#: brings it back. ``in_flight`` and ``max_delivery_count`` are a shared-dispatch worker's records
#: held and the highest delivery count among them (``Worker._beat``); a beat without them (empty, or
#: absent: a partitioned worker) removes both fields from the record.
HEARTBEAT = """
local ns, name, now, state = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local wkey = ns .. ':worker:' .. name
local previous, dead_at = unpack(redis.call('HMGET', wkey, 'state', 'dead_at'))
if previous == 'dead' and tonumber(now) <= tonumber(dead_at or 0) then return 'dead' end
redis.call('HSET', wkey, 'name', name, 'state', state, 'current_task', ARGV[5], 'pid', ARGV[6], 'host', ARGV[7],
  'partitions', ARGV[8], 'last_heartbeat', now, 'started_at', ARGV[10], 'rebalances', ARGV[11])
if (ARGV[12] or '') ~= '' then
  redis.call('HSET', wkey, 'in_flight', ARGV[12], 'max_delivery_count', ARGV[13] or '0')
else
  redis.call('HDEL', wkey, 'in_flight', 'max_delivery_count')
end
if previous == 'dead' and state ~= 'stopped' then redis.call('HINCRBY', wkey, 'revived', 1) end
if state == 'stopped' then redis.call('HSET', wkey, 'stopped_at', now) end
redis.call('HSETNX', wkey, 'processed', 0)
redis.call('HSETNX', wkey, 'failed', 0)
redis.call('ZADD', ns .. ':workers', now, name)
local beat = {at=tonumber(now), state=state, task=ARGV[5]}
redis.call('LPUSH', wkey .. ':beats', cjson.encode(beat))
redis.call('LTRIM', wkey .. ':beats', 0, tonumber(ARGV[9]) - 1)
beat['type'] = 'heartbeat'
beat['worker'] = name
beat['processed'] = tonumber(redis.call('HGET', wkey, 'processed'))
beat['failed'] = tonumber(redis.call('HGET', wkey, 'failed'))
event(ns .. ':events', beat)
return previous or ''
"""

#: ARGV: ns, now, heartbeat_timeout, default_max_retries, ttl
#: -> list of messages to publish again. Two kinds of ``processing`` task are taken back:
#:
#: 1. its holder stopped heartbeating (crashed, paused, cut off) for longer than the timeout;
#: 2. its holder is alive, but none of its heartbeats has listed the task (``current_task``) for
#:    longer than the timeout. That is a task the holder no longer runs and will never finish: its
#:    outcome was lost (Redis crashed after the offset was committed but before its write of the
#:    outcome reached the append-only file), so Kafka will not redeliver it either, and without this
#:    it would stay ``processing`` forever. A heartbeat that merely missed a claim (written just
#:    before it) lists the task at the next beat, one interval later, which clears the mark; only a
#:    task unlisted through a whole timeout of beats is taken back. The mark (``NS:unlisted``,
#:    id -> "since|owner|attempt") names the claim it was made for, so a later claim of the same
#:    task by anyone starts afresh, and marks of tasks no longer running are swept on each pass.
#:
#: All of it runs in this one script, atomically with respect to the holder's own scripts: either
#: its FINISH came first (the task is no longer ``processing`` and is left alone) or the requeue
#: did (the holder's FINISH then fails its ownership check, so the result is stored once). The worst
#: case of a wrong guess is a second execution with one result kept, never a lost task.
REAP = """
local ns, now, timeout = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local stale = redis.call('ZRANGEBYSCORE', ns .. ':workers', '-inf', now - timeout)
for _, name in ipairs(stale) do
  local wkey = ns .. ':worker:' .. name
  local state = redis.call('HGET', wkey, 'state')
  if state ~= 'dead' and state ~= 'stopped' then
    redis.call('HSET', wkey, 'state', 'dead', 'dead_at', now)
    event(ns .. ':events', {type='worker', worker=name, state='dead', at=now})
  end
end
local unlisted = ns .. ':unlisted'
local marks = {}
local requeue = {}
local running = redis.call('HGETALL', ns .. ':running')
for i = 1, #running, 2 do
  local id, owner = running[i], running[i + 1]
  local tkey = ns .. ':task:' .. id
  local beat = tonumber(redis.call('ZSCORE', ns .. ':workers', owner) or '0')
  local why = nil
  if now - beat > timeout then
    why = 'worker ' .. owner .. ' stopped heartbeating'
  else
    local listed = redis.call('HGET', ns .. ':worker:' .. owner, 'current_task') or ''
    if not string.find(',' .. listed .. ',', ',' .. id .. ',', 1, true) then
      local claim = owner .. '|' .. (redis.call('HGET', tkey, 'attempts') or '0')
      local mark = redis.call('HGET', unlisted, id)
      local since = nil
      if mark then
        local sep = string.find(mark, '|', 1, true)
        if string.sub(mark, sep + 1) == claim then since = tonumber(string.sub(mark, 1, sep - 1)) end
      end
      if not since then
        since = now
        redis.call('HSET', unlisted, id, string.format('%.6f', now) .. '|' .. claim)  -- tostring keeps 14 digits
      end
      marks[id] = true
      if now - since > timeout then
        why = 'worker ' .. owner .. ' is alive but has not listed it in its heartbeats for ' ..
          string.format('%.1f', now - since) .. ' s'
        marks[id] = nil
      end
    end
  end
  if why then
    local st = redis.call('HMGET', tkey, 'status', 'worker', 'attempts', 'max_retries', 'message')
    redis.call('HDEL', ns .. ':running', id)
    if st[1] == 'processing' and st[2] == owner then
      local attempts = tonumber(st[3])
      lose(ns, owner, id)
      if attempts >= tonumber(st[4] or ARGV[4]) + 1 then
        transition(ns, id, 'failed', now, nil, attempts, 'no retries left', {'finished_at', now,
          'reason', 'worker_lost', 'error', 'worker ' .. owner .. ' lost attempt ' .. attempts .. ' (' .. why ..
          '); no retries left'})
        wake(ns, id)
        keep(ns, id, ARGV[5])
      else
        transition(ns, id, 'queued', now, nil, attempts, 'requeued: ' .. why, {'worker', ''})
        table.insert(requeue, st[5])
      end
    end
  end
end
for _, id in ipairs(redis.call('HKEYS', unlisted)) do
  if not marks[id] then redis.call('HDEL', unlisted, id) end
end
return requeue
"""

#: ARGV: ns, now, lease -> list of messages whose retry is due; each is leased for ``lease`` seconds
#: so that a worker dying between this call and the publish does not lose it.
DUE = """
local ns, now, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local ids = redis.call('ZRANGEBYSCORE', ns .. ':scheduled', '-inf', now, 'LIMIT', 0, 100)
local out = {}
for _, id in ipairs(ids) do
  local message = redis.call('HGET', ns .. ':task:' .. id, 'message')
  if message then
    redis.call('ZADD', ns .. ':scheduled', now + lease, id)
    table.insert(out, message)
  else
    redis.call('ZREM', ns .. ':scheduled', id)
  end
end
return out
"""

#: ARGV: ns, cutoff, count -> how many ids were dropped from the task index
#: A task's record expires ``result_ttl`` after it finishes, so only ids submitted before
#: ``now - result_ttl`` (the cutoff) can point at nothing; the oldest ``count`` of them are checked
#: and the dangling ones removed. Bounded work per call, so the index stays as large as what is kept.
PRUNE = """
local ns, cutoff, count = ARGV[1], ARGV[2], tonumber(ARGV[3])
local index = ns .. ':tasks'
local gone = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', index, '-inf', cutoff, 'LIMIT', 0, count)) do
  if redis.call('EXISTS', ns .. ':task:' .. id) == 0 then
    redis.call('ZREM', index, id)
    gone = gone + 1
  end
end
return gone
"""

#: ARGV: ns, cutoff, count -> flat list of id, updated_at for ``queued`` tasks queued before ``cutoff``
#: The reconciliation's candidates (see ``worker/reconcile.py``): tasks that have waited ``lost_after``
#: without a claim. It scans the task index from ``NS:reconciled``, the submission time before which
#: every task has reached a final state, and moves that mark up to the first task that has not (or to
#: the last one looked at), so each pass reads only the tasks still in play, ``count`` at most.
STALE = """
local ns, cutoff, count = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local mark = ns .. ':reconciled'
local from = redis.call('GET', mark) or '-inf'
local scanned = redis.call('ZRANGEBYSCORE', ns .. ':tasks', from, cutoff, 'WITHSCORES', 'LIMIT', 0, count)
local out = {}
local settled_to = nil
local open = false
for i = 1, #scanned, 2 do
  local id, score = scanned[i], scanned[i + 1]
  local st = redis.call('HMGET', ns .. ':task:' .. id, 'status', 'updated_at')
  local final = st[1] == false or st[1] == 'success' or st[1] == 'failed' or st[1] == 'cancelled'
  if not final then open = true end
  if not open then settled_to = score end
  if st[1] == 'queued' and tonumber(st[2]) <= cutoff then
    table.insert(out, id)
    table.insert(out, st[2])
  end
end
if settled_to then redis.call('SET', mark, settled_to) end
return out
"""

#: ARGV: ns, id, updated_at, now, note -> the task's message to publish again, or false
#: The task is still ``queued`` as it was when the reconciliation looked (same ``updated_at``): no
#: worker claimed it meanwhile. It stays ``queued``, with the reason in its history.
REPUBLISH = """
local ns, id = ARGV[1], ARGV[2]
local st = redis.call('HMGET', ns .. ':task:' .. id, 'status', 'updated_at', 'attempts', 'message')
if st[1] ~= 'queued' or st[2] ~= ARGV[3] or not st[4] then return false end
transition(ns, id, 'queued', ARGV[4], nil, st[3], ARGV[5], nil)
return st[4]
"""

SCRIPTS = {
    name: _PRELUDE + source
    for name, source in {
        "submit": SUBMIT,
        "unsubmit": UNSUBMIT,
        "claim": CLAIM,
        "finish": FINISH,
        "retry": RETRY,
        "release": RELEASE,
        "cancel": CANCEL,
        "reject": REJECT,
        "heartbeat": HEARTBEAT,
        "reap": REAP,
        "due": DUE,
        "prune": PRUNE,
        "stale": STALE,
        "republish": REPUBLISH,
    }.items()
}
