#!lua flags=allow-oom
-- FINISH: for each of a batch of messages (finished by the worker threads of one process, coalesced
-- into one call), record what happened to its units, hand failures over, move lanes on, and ack it,
-- atomically.
--
-- KEYS: queue, messages hash, stats, units, dead letters, dead messages hash, heartbeats, retries,
-- the done-marks' prefix.
-- ARGV (packed: finish.pack's msgpack array in ARGV[1], unpacked below; each ``data`` field in a
-- slot of its own after it): now ms (the dead letters' time), ttl ms, then per message its
-- FINISH_MESSAGE record (as wa_middleware/worker/finish.py names its fields: the redis id to ack,
-- "" for none; the acks of the process that took it; that process's broker id; take, "1" or "0";
-- the number of operations)
-- followed by its operations, each an op code and its fields as finish.py's OPS names them (the
-- bindings below are generated from those tables):
--   done   the unit ran (or needs no run): its claim gives way to a done-mark (or "d" without one)
--   retry  its next try is owner's message, due at a time: stored, and waiting in the retries set
--   dead   dead-lettered as message rid
--   wait   a unit of the message that waits in its lane (behind a failed one, or planned "q"): its
--          message stored, or enqueued if it heads the lane already
--   pop    pop uid off the lane head; the next head's stored message is enqueued
--   drop   a unit that will not run here: as pop at the head, else taken out of its lane
--   bury   move the message's own body to the dead letters (a message dramatiq rejected)
-- With take k >= 1, a next head is not pushed on the queue but taken by the same process (put in its
-- acks, as if fetched) and returned with the stored messages of up to k - 1 units right behind it
-- (read, not taken: they stay waiting in their lane): the worker runs the head at once, saving a hop
-- through the queue, and the units behind it after it, finishing them all in one later call whose
-- records each take the next over in turn. If the worker dies, recovery requeues the head like
-- anything else it had taken; the units behind it are still waiting in the lane.
--
-- Fenced and idempotent, message by message: a message's record applies only while it is still in
-- the acks of the process that took it. Otherwise its result is {"again"} when that process is still
-- alive (an earlier call whose reply was lost applied it) or {"gone"} when its lease was taken over
-- (it was requeued and runs elsewhere: this outcome must not count). Applied: {"ok", id, message,
-- ahead, ...} with the lane heads it took, ahead being {id, message, ...} of the units behind each.
-- Returns one result per message, in order.
-- Allowed when Redis is out of memory (noeviction): finishing frees the message bodies.
local queue, msgs, stats, units = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local xq, xmsgs, hb, retries, DN = KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
--@packed
--@include marks
local now, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
--@arity
-- Pop the head of a lane; the next head's stored message is enqueued, or with take k >= 1 taken by
-- this process with up to k - 1 units behind it (added to taken).
local function move_on(lane, acks, take, taken)
  redis.call("lpop", lane)
  local head = redis.call("lindex", lane, 0)
  if head then
    local stored = redis.call("hget", units, head)
    if stored then
      redis.call("hdel", units, head)
      redis.call("hset", msgs, head, stored)
      if take > 0 then
        redis.call("sadd", acks, head)
        local ahead = {}
        if take > 1 then
          for _, next_uid in ipairs(redis.call("lrange", lane, 1, take - 1)) do
            local next_data = redis.call("hget", units, next_uid)
            if not next_data then break end
            ahead[#ahead + 1] = next_uid
            ahead[#ahead + 1] = next_data
          end
        end
        taken[#taken + 1] = head
        taken[#taken + 1] = stored
        taken[#taken + 1] = ahead
      else
        redis.call("rpush", queue, head)
      end
    end
  end
end
local results = {}
local i = 3
while i <= #ARGV do
  --@bind FINISH_MESSAGE
  local n = tonumber(count)
  local live = rid == "" or redis.call("sismember", acks, rid) == 1
  if not live then
    -- Skip its operations: each starts with its code, followed by that op's fields.
    for _ = 1, n do
      i = i + 1 + ARITY[ARGV[i]]
    end
    if redis.call("zscore", hb, bid) then
      results[#results + 1] = {"again"}
    else
      results[#results + 1] = {"gone"}
    end
  else
    local taken = {"ok"}
    take = tonumber(take)
    for _ = 1, n do
      local op = ARGV[i]
      if op == "done" then
        --@bind done
        if hour ~= "" then
          redis.call("hdel", key, field)
          add_mark(hour, shard, digest, ttl)
        else
          redis.call("hset", key, field, "d")
          redis.call("pexpire", key, ttl)
        end
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
        if redis.call("lindex", lane, 0) == uid then
          -- Its turn came before its message was stored (the unit ahead finished meanwhile).
          redis.call("hset", msgs, uid, data)
          redis.call("rpush", queue, uid)
        else
          redis.call("hset", units, uid, data)
        end
      elseif op == "pop" then
        --@bind pop
        if redis.call("lindex", lane, 0) == uid then
          move_on(lane, acks, take, taken)
        end
      elseif op == "drop" then
        --@bind drop
        if redis.call("lindex", lane, 0) == uid then
          move_on(lane, acks, take, taken)
        else
          -- Behind others: out of the lane, with its stored message (its turn would run nothing).
          redis.call("lrem", lane, 1, uid)
          redis.call("hdel", units, uid)
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
    results[#results + 1] = taken
  end
end
return results
