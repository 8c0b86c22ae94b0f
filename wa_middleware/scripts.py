"""The Lua scripts of the worker: one round trip per fetched batch, one per finished delivery.

State they keep, under ``<namespace>:<webhook name>:``:

* ``idem:<event key>`` -- hash, one field per callback: ``c|<owner>`` (claimed: the message with
  dramatiq id ``<owner>`` is responsible for running it), ``d`` (done) or ``x|<owner>`` (dead-lettered).
  Expires ``dedupe_ttl`` after the last write.
* ``lane:<conversation>`` -- list of the ordered units of one conversation, head first. The head is
  the only one that may run; it is backed by exactly one dramatiq message (the delivery that ran it
  inline, or the unit's own message), so a killed worker's head comes back through dramatiq's
  redelivery, before anything behind it.
* ``units`` -- hash ``unit id -> encoded dramatiq message`` of ordered units waiting in a lane; the
  message is enqueued when its unit reaches the head.
* ``st:<message id>`` -- the highest status rank (sent 1, delivered 2, read 3, played 4) claimed
  for a message, when stale statuses are skipped.
* ``stats`` -- hash of counters (``duplicates``, ``dead_lettered``, ``stale_statuses``).

dramatiq's own keys are used exactly as its broker uses them (``<namespace>:<queue>``, ``.msgs``,
``__acks__.<broker id>.<queue>``, ``__heartbeats__``, ``.XQ``), so stock maintenance and requeueing work.
"""

from __future__ import annotations

__all__ = ["FINISH", "PEEK", "PLAN"]

#: ARGV: queue, count -> {ids, datas} of the first ``count`` messages, without taking them.
PEEK = """
local ids = redis.call("lrange", ARGV[1], 0, tonumber(ARGV[2]) - 1)
if #ids == 0 then return {} end
return {ids, redis.call("hmget", ARGV[1] .. ".msgs", unpack(ids))}
"""

#: Take messages off the head of the queue (only while the head is the one expected) and claim their
#: units, atomically, so the order of conversation lanes is exactly the order of the queue.
#:
#: ARGV: queue, acks, heartbeats, broker id, now, ttl ms, stats, pop ("1": take from the queue head,
#: "0": plan only), then per message: redis id, dramatiq id, n, and
#:   n >= 0 (a delivery): n units of 6 args: idem key, callback, lane ("" if unordered), unit id, message,
#:     stale ("" or "<status progress key>|<rank>": skip a status ranked below one already seen)
#:   n == -1 (a unit's own message): idem key, callback, lane
#: Returns one string per message taken: per unit "r" (run now, by this message), "q" (waits in its
#: lane), "s" (skip: done, dead, or claimed by another message).
PLAN = """
local queue, acks, hb, bid = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now, ttl, stats, pop = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7], ARGV[8]
local units = string.sub(stats, 1, -6) .. "units"
if pop == "1" then redis.call("zadd", hb, now, bid) end
local out = {}
local i = 9
local dups = 0
while i <= #ARGV do
  local rid, mid, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  i = i + 3
  if pop == "1" then
    if redis.call("lindex", queue, 0) ~= rid then break end
    redis.call("lpop", queue)
    redis.call("sadd", acks, rid)
  end
  local res = {}
  if n < 0 then
    local key, field, lane = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    i = i + 3
    local v = redis.call("hget", key, field)
    if v == "c|" .. mid and (lane == "" or redis.call("lindex", lane, 0) == mid) then
      res[1] = "r"
    else
      res[1] = "s"
    end
  else
    local heads = {}
    for u = 1, n do
      local key, field, lane, uid, data = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
      local stale = ARGV[i + 5]
      i = i + 6
      local v = redis.call("hget", key, field)
      local r = "s"
      if not v and stale ~= "" then
        local sep = string.find(stale, "|", 1, true)
        local skey, rank = string.sub(stale, 1, sep - 1), tonumber(string.sub(stale, sep + 1))
        local seen = tonumber(redis.call("get", skey) or "0")
        if seen > rank then
          redis.call("hset", key, field, "d")
          redis.call("pexpire", key, ttl)
          redis.call("hincrby", stats, "stale_statuses", 1)
          v = "d"
        elseif rank > seen then
          redis.call("set", skey, rank, "px", ttl)
        end
      end
      if not v then
        if lane == "" then
          redis.call("hset", key, field, "c|" .. mid)
          r = "r"
        else
          redis.call("rpush", lane, uid)
          if heads[lane] or redis.call("llen", lane) == 1 then
            heads[lane] = true
            redis.call("hset", key, field, "c|" .. mid)
            r = "r"
          else
            redis.call("hset", key, field, "c|" .. uid)
            redis.call("hset", units, uid, data)
            r = "q"
          end
        end
        redis.call("pexpire", key, ttl)
      elseif v == "c|" .. mid then
        r = "r"
      else
        dups = dups + 1
      end
      res[u] = r
    end
  end
  out[#out + 1] = table.concat(res)
end
if dups > 0 then redis.call("hincrby", stats, "duplicates", dups) end
return out
"""

#: Record what happened to the units of one message, hand failures over, promote lane heads, and ack.
#:
#: ARGV: queue, acks, redis id to ack ("" for none), now, ttl ms, stats, take, then ops:
#:   "d" key field                   done
#:   "r" key field owner rid data q  retry: owner takes over, its message goes on queue q
#:   "x" key field owner rid data    dead letter
#:   "w" key field uid data          an inline unit that now waits in its lane behind a failed one
#:   "p" lane uid                    pop uid off the lane head, enqueue the next head's message if stored
#: With take "1", a next head is not pushed on the queue but taken by this worker (put in its acks,
#: as if fetched) and returned, {id, message, ...}: the worker runs it at once, saving a hop through
#: the queue; if the worker dies, dramatiq's recovery requeues it like anything else it had taken.
FINISH = """
local queue, acks, rid, now, ttl, stats = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local take = ARGV[7] == "1"
local units = string.sub(stats, 1, -6) .. "units"
local xq = queue .. ".XQ"
local taken = {}
local i = 8
while i <= #ARGV do
  local op = ARGV[i]
  if op == "d" then
    redis.call("hset", ARGV[i + 1], ARGV[i + 2], "d")
    redis.call("pexpire", ARGV[i + 1], ttl)
    i = i + 3
  elseif op == "r" then
    local q = ARGV[i + 6]
    redis.call("hset", ARGV[i + 1], ARGV[i + 2], "c|" .. ARGV[i + 3])
    redis.call("pexpire", ARGV[i + 1], ttl)
    redis.call("hset", q .. ".msgs", ARGV[i + 4], ARGV[i + 5])
    redis.call("rpush", q, ARGV[i + 4])
    i = i + 7
  elseif op == "x" then
    redis.call("hset", ARGV[i + 1], ARGV[i + 2], "x|" .. ARGV[i + 3])
    redis.call("pexpire", ARGV[i + 1], ttl)
    redis.call("zadd", xq, now, ARGV[i + 4])
    redis.call("hset", xq .. ".msgs", ARGV[i + 4], ARGV[i + 5])
    redis.call("hincrby", stats, "dead_lettered", 1)
    i = i + 6
  elseif op == "w" then
    redis.call("hset", ARGV[i + 1], ARGV[i + 2], "c|" .. ARGV[i + 3])
    redis.call("hset", units, ARGV[i + 3], ARGV[i + 4])
    i = i + 5
  elseif op == "p" then
    local lane, uid = ARGV[i + 1], ARGV[i + 2]
    i = i + 3
    if redis.call("lindex", lane, 0) == uid then
      redis.call("lpop", lane)
      local head = redis.call("lindex", lane, 0)
      if head then
        local data = redis.call("hget", units, head)
        if data then
          redis.call("hdel", units, head)
          redis.call("hset", queue .. ".msgs", head, data)
          if take then
            redis.call("sadd", acks, head)
            taken[#taken + 1] = head
            taken[#taken + 1] = data
          else
            redis.call("rpush", queue, head)
          end
        end
      end
    end
  else
    return redis.error_reply("unknown op " .. tostring(op))
  end
end
if rid ~= "" and redis.call("srem", acks, rid) > 0 then
  redis.call("hdel", queue .. ".msgs", rid)
end
return taken
"""
