"""The Lua scripts of the Redis broker: each state change is one atomic script.

Keys (``P`` is the key prefix, ``jobkit:`` by default):

- ``P seq``: the message id counter; ``P queues``: the set of queue names.
- ``P m:<id>``: one hash per message: body, queue, pri, ttr, delay, created,
  state, holder, and beanstalkd's counters (reserves, timeouts, releases,
  buries, kicks) plus ``lost``.
- ``P q:<queue>:ready``: sorted set scored by priority; ties are ordered by
  member, and ids are zero-padded counters, so equal priorities are FIFO.
- ``P q:<queue>:delayed`` / ``:reserved`` / ``:buried``: sorted sets scored
  by due time, TTR deadline and bury time (milliseconds, the server's clock).
- ``P q:<queue>:signal``: a list a put pushes to, so a waiting consumer's
  BLPOP wakes; ``P q:<queue>:waiting``: consumers waiting, scored by expiry.
- ``P q:<queue>:total``: how many messages were ever put.

Every script runs :data:`PRELUDE` first; ``ARGV[1]`` is always the prefix.
Time is the Redis server's (``TIME``), so client clocks never matter.
"""
from __future__ import annotations

#: Shared helpers. ``maintain`` is what makes the broker hold delays and TTRs
#: without any worker's memory: whoever next touches a queue (a reserve, a
#: stats call) first moves due delayed messages and expired reservations to ready.
PRELUDE = """
local P = ARGV[1]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function qk(q, kind) return P .. 'q:' .. q .. ':' .. kind end
local function mk(id) return P .. 'm:' .. id end
local function make_ready(q, id)
  redis.call('ZADD', qk(q, 'ready'), redis.call('HGET', mk(id), 'pri'), id)
  redis.call('HSET', mk(id), 'state', 'ready')
  redis.call('LPUSH', qk(q, 'signal'), '1')
  redis.call('LTRIM', qk(q, 'signal'), 0, 999)
end
local function maintain(q, now)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', qk(q, 'delayed'), '-inf', now, 'LIMIT', 0, 1000)) do
    redis.call('ZREM', qk(q, 'delayed'), id)
    make_ready(q, id)
  end
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', qk(q, 'reserved'), '-inf', now, 'LIMIT', 0, 1000)) do
    redis.call('ZREM', qk(q, 'reserved'), id)
    redis.call('HINCRBY', mk(id), 'timeouts', 1)
    redis.call('HINCRBY', mk(id), 'lost', 1)
    redis.call('HDEL', mk(id), 'holder')
    make_ready(q, id)
  end
end
local function held(id, holder)
  return redis.call('HGET', mk(id), 'holder') == holder
end
local function unreserve(id, pri)
  local q = redis.call('HGET', mk(id), 'queue')
  redis.call('ZREM', qk(q, 'reserved'), id)
  redis.call('HDEL', mk(id), 'holder')
  if pri ~= nil then redis.call('HSET', mk(id), 'pri', pri) end
  return q
end
"""

#: ARGV: prefix, queue, body, priority, delay_s, ttr_s. Returns the new id.
PUT = PRELUDE + """
local q, delay = ARGV[2], tonumber(ARGV[5])
local now = now_ms()
local id = string.format('%016d', redis.call('INCR', P .. 'seq'))
redis.call('HSET', mk(id), 'body', ARGV[3], 'queue', q, 'pri', ARGV[4], 'ttr', ARGV[6],
           'delay', delay, 'created', now, 'reserves', 0, 'timeouts', 0, 'releases', 0,
           'buries', 0, 'kicks', 0, 'lost', 0)
redis.call('SADD', P .. 'queues', q)
redis.call('INCR', qk(q, 'total'))
if delay > 0 then
  redis.call('ZADD', qk(q, 'delayed'), now + delay * 1000, id)
  redis.call('HSET', mk(id), 'state', 'delayed')
else
  make_ready(q, id)
end
return id
"""

#: ARGV: prefix, consumer token, wait_ms, queues... Returns {id, body, reserves,
#: lost} or {'', ms until the next delay or TTR falls due (at most wait_ms)}.
RESERVE = PRELUDE + """
local token, wait = ARGV[2], tonumber(ARGV[3])
local now = now_ms()
local best, bestpri
for i = 4, #ARGV do
  local q = ARGV[i]
  maintain(q, now)
  local head = redis.call('ZRANGE', qk(q, 'ready'), 0, 0, 'WITHSCORES')
  if head[1] then
    local pri = tonumber(head[2])
    if best == nil or pri < bestpri or (pri == bestpri and head[1] < best) then
      best, bestpri = head[1], pri
    end
  end
end
if best then
  local m = mk(best)
  local q = redis.call('HGET', m, 'queue')
  for i = 4, #ARGV do redis.call('ZREM', qk(ARGV[i], 'waiting'), token) end
  redis.call('ZREM', qk(q, 'ready'), best)
  redis.call('ZADD', qk(q, 'reserved'), now + tonumber(redis.call('HGET', m, 'ttr')) * 1000, best)
  local n = redis.call('HINCRBY', m, 'reserves', 1)
  redis.call('HSET', m, 'state', 'reserved', 'holder', token .. ':' .. n)
  return {best, redis.call('HGET', m, 'body'), n, tonumber(redis.call('HGET', m, 'lost'))}
end
local wake = now + wait
for i = 4, #ARGV do
  local q = ARGV[i]
  redis.call('ZREMRANGEBYSCORE', qk(q, 'waiting'), '-inf', now)
  redis.call('ZADD', qk(q, 'waiting'), now + wait + 2000, token)
  redis.call('SADD', P .. 'queues', q)  -- as beanstalkd lists a watched tube
  for _, kind in ipairs({'delayed', 'reserved'}) do
    local first = redis.call('ZRANGE', qk(q, kind), 0, 0, 'WITHSCORES')
    if first[1] then wake = math.min(wake, tonumber(first[2])) end
  end
end
return {'', math.max(0, wake - now)}
"""

#: ARGV: prefix, token, queues... A consumer that stops waiting leaves the waiting sets.
UNWAIT = PRELUDE + """
for i = 3, #ARGV do redis.call('ZREM', qk(ARGV[i], 'waiting'), ARGV[2]) end
return 1
"""

#: ARGV: prefix, id, holder. 1 when deleted, 0 when no longer held by ``holder``.
DELETE_HELD = PRELUDE + """
if not held(ARGV[2], ARGV[3]) then return 0 end
unreserve(ARGV[2], nil)
redis.call('DEL', mk(ARGV[2]))
return 1
"""

#: ARGV: prefix, id, holder, priority, delay_s.
RELEASE = PRELUDE + """
local id, delay = ARGV[2], tonumber(ARGV[5])
if not held(id, ARGV[3]) then return 0 end
local q = unreserve(id, ARGV[4])
redis.call('HINCRBY', mk(id), 'releases', 1)
redis.call('HSET', mk(id), 'delay', delay)
if delay > 0 then
  redis.call('ZADD', qk(q, 'delayed'), now_ms() + delay * 1000, id)
  redis.call('HSET', mk(id), 'state', 'delayed')
else
  make_ready(q, id)
end
return 1
"""

#: ARGV: prefix, id, holder, priority.
BURY = PRELUDE + """
local id = ARGV[2]
if not held(id, ARGV[3]) then return 0 end
local q = unreserve(id, ARGV[4])
redis.call('HINCRBY', mk(id), 'buries', 1)
redis.call('ZADD', qk(q, 'buried'), now_ms(), id)
redis.call('HSET', mk(id), 'state', 'buried')
return 1
"""

#: ARGV: prefix, id, holder. Restarts the TTR clock.
TOUCH = PRELUDE + """
local id = ARGV[2]
if not held(id, ARGV[3]) then return 0 end
local m = mk(id)
local q = redis.call('HGET', m, 'queue')
redis.call('ZADD', qk(q, 'reserved'), 'XX', now_ms() + tonumber(redis.call('HGET', m, 'ttr')) * 1000, id)
return 1
"""

#: ARGV: prefix, id, holder. A closing consumer gives a message back unsettled (a lost delivery).
DROP = PRELUDE + """
local id = ARGV[2]
if not held(id, ARGV[3]) then return 0 end
local q = unreserve(id, nil)
redis.call('HINCRBY', mk(id), 'lost', 1)
make_ready(q, id)
return 1
"""

#: ARGV: prefix, id. Deletes a message nobody holds.
DELETE_FREE = PRELUDE + """
local id = ARGV[2]
local state = redis.call('HGET', mk(id), 'state')
if not state or state == 'reserved' then return 0 end
redis.call('ZREM', qk(redis.call('HGET', mk(id), 'queue'), state), id)
redis.call('DEL', mk(id))
return 1
"""

#: ARGV: prefix, id. A buried or delayed message becomes ready.
KICK = PRELUDE + """
local id = ARGV[2]
local state = redis.call('HGET', mk(id), 'state')
if state ~= 'buried' and state ~= 'delayed' then return 0 end
local q = redis.call('HGET', mk(id), 'queue')
redis.call('ZREM', qk(q, state), id)
redis.call('HINCRBY', mk(id), 'kicks', 1)
make_ready(q, id)
return 1
"""

#: ARGV: prefix, id. Returns {now_ms, deadline or due (ms) or '', field, value, ...} or {}.
PEEK = PRELUDE + """
local id = ARGV[2]
local fields = redis.call('HGETALL', mk(id))
if #fields == 0 then return {} end
local q = redis.call('HGET', mk(id), 'queue')
local now = now_ms()
maintain(q, now)
local state = redis.call('HGET', mk(id), 'state')
local due = ''
if state == 'reserved' or state == 'delayed' then due = redis.call('ZSCORE', qk(q, state), id) end
fields = redis.call('HGETALL', mk(id))
table.insert(fields, 1, due)
table.insert(fields, 1, now)
return fields
"""

#: ARGV: prefix. Returns {queue, ready, reserved, delayed, buried, urgent, total, waiting, ...}.
STATS = PRELUDE + """
local now = now_ms()
local out = {}
for _, q in ipairs(redis.call('SMEMBERS', P .. 'queues')) do
  maintain(q, now)
  redis.call('ZREMRANGEBYSCORE', qk(q, 'waiting'), '-inf', now)
  table.insert(out, q)
  for _, kind in ipairs({'ready', 'reserved', 'delayed', 'buried'}) do
    table.insert(out, redis.call('ZCARD', qk(q, kind)))
  end
  table.insert(out, redis.call('ZCOUNT', qk(q, 'ready'), '-inf', '(1024'))
  table.insert(out, tonumber(redis.call('GET', qk(q, 'total')) or '0'))
  table.insert(out, redis.call('ZCARD', qk(q, 'waiting')))
end
return out
"""
