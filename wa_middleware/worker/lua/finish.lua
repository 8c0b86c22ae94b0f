#!lua flags=allow-oom
-- FINISH: record what happened to the units of one message, hand failures over, move lanes on,
-- and ack the message, atomically.
--
-- KEYS: queue, messages hash, acks (of the worker process that took the message), stats, units,
-- dead letters, dead messages hash, heartbeats, retries.
-- ARGV: redis id to ack ("" for none), that process's broker id, now ms (the dead letters' time),
-- ttl ms, take ("1" or "0"), then operations, each
-- an op code and its fields as wa_middleware/worker/finish.py's OPS names them (the bindings below
-- are generated from that table):
--   done   the unit ran (or needs no run)
--   retry  its next try is owner's message, due at a time: stored, and waiting in the retries set
--   dead   dead-lettered as message rid
--   wait   an inline unit that now waits in its lane behind a failed one
--   pop    pop uid off the lane head; the next head's stored message is enqueued
--   bury   move the message's own body to the dead letters (a message dramatiq rejected)
-- With take "1", a next head is not pushed on the queue but taken by this worker (put in its
-- acks, as if fetched) and returned, {id, message, ...}: the worker runs it at once, saving a hop
-- through the queue; if the worker dies, recovery requeues it like anything else it had taken.
--
-- Fenced and idempotent: it applies only while the message is still in the acks of the process
-- that took it. Otherwise it returns {"again"} when that process is still alive (an earlier call
-- whose reply was lost applied it) or {"gone"} when its lease was taken over (the message was
-- requeued, and runs elsewhere: this outcome must not count). Returns {"ok", taken...} when applied.
-- Allowed when Redis is out of memory (noeviction): finishing frees the message body.
local queue, msgs, acks, stats, units = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local xq, xmsgs, hb, retries = KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local rid, bid, now, ttl, take = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5] == "1"
if rid ~= "" and redis.call("sismember", acks, rid) == 0 then
  if redis.call("zscore", hb, bid) then return {"again"} end
  return {"gone"}
end
local taken = {"ok"}
local i = 6
while i <= #ARGV do
  local op = ARGV[i]
  if op == "done" then
    --@bind done
    redis.call("hset", key, field, "d")
    redis.call("pexpire", key, ttl)
  elseif op == "retry" then
    --@bind retry
    redis.call("hset", key, field, "c|" .. owner)
    redis.call("pexpire", key, ttl)
    redis.call("hset", msgs, next_rid, data)
    redis.call("zadd", retries, due, next_rid)
  elseif op == "dead" then
    --@bind dead
    redis.call("hset", key, field, "x|" .. owner)
    redis.call("pexpire", key, ttl)
    redis.call("zadd", xq, now, dead_rid)
    redis.call("hset", xmsgs, dead_rid, data)
    redis.call("hincrby", stats, "dead_lettered", 1)
  elseif op == "wait" then
    --@bind wait
    redis.call("hset", key, field, "c|" .. uid)
    redis.call("hset", units, uid, data)
  elseif op == "pop" then
    --@bind pop
    if redis.call("lindex", lane, 0) == uid then
      redis.call("lpop", lane)
      local head = redis.call("lindex", lane, 0)
      if head then
        local stored = redis.call("hget", units, head)
        if stored then
          redis.call("hdel", units, head)
          redis.call("hset", msgs, head, stored)
          if take then
            redis.call("sadd", acks, head)
            taken[#taken + 1] = head
            taken[#taken + 1] = stored
          else
            redis.call("rpush", queue, head)
          end
        end
      end
    end
  elseif op == "bury" then
    --@bind bury
    local body = redis.call("hget", msgs, buried)
    if body then
      redis.call("zadd", xq, now, buried)
      redis.call("hset", xmsgs, buried, body)
      redis.call("hincrby", stats, "dead_lettered", 1)
    end
  else
    return redis.error_reply("unknown op " .. tostring(op))
  end
end
if rid ~= "" and redis.call("srem", acks, rid) > 0 then
  redis.call("hdel", msgs, rid)
end
return taken
