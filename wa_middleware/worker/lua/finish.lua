-- FINISH: record what happened to the units of one message, hand failures over, move lanes on,
-- and ack the message, atomically.
--
-- KEYS: queue, messages hash, acks, stats, units, dead letters, dead messages hash.
-- ARGV: redis id to ack ("" for none), now ms, ttl ms, take ("1" or "0"), then operations, each
-- an op code and its fields as wa_middleware/worker/finish.py's OPS names them (the bindings below
-- are generated from that table):
--   done   the unit ran (or needs no run)
--   retry  its next try is owner's message, put on queue q (the delay queue, with an eta)
--   dead   dead-lettered as message rid
--   wait   an inline unit that now waits in its lane behind a failed one
--   pop    pop uid off the lane head; the next head's stored message is enqueued
-- With take "1", a next head is not pushed on the queue but taken by this worker (put in its
-- acks, as if fetched) and returned, {id, message, ...}: the worker runs it at once, saving a hop
-- through the queue; if the worker dies, recovery requeues it like anything else it had taken.
local queue, msgs, acks, stats, units, xq, xmsgs = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local rid, now, ttl, take = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == "1"
local taken = {}
local i = 5
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
    redis.call("hset", q_msgs, next_rid, data)
    redis.call("rpush", q, next_rid)
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
  else
    return redis.error_reply("unknown op " .. tostring(op))
  end
end
if rid ~= "" and redis.call("srem", acks, rid) > 0 then
  redis.call("hdel", msgs, rid)
end
return taken
