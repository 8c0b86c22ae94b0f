#!lua flags=allow-oom
-- RECOVER: a worker process's heartbeat, on Redis's own clock, and the recovery of the messages
-- of worker processes whose heartbeat is older than the timeout (killed, or paused that long),
-- done only by a process whose own previous heartbeat is recent.
--
-- KEYS: heartbeats, queue, messages hash, dead letters, dead messages hash, epoch marker.
-- ARGV: broker id, timeout ms, acks key prefix, fresh ("1": a new broker id, register it),
-- dead letter ttl ms, a new epoch marker to write when there is none ("": write none).
-- Returns {state, requeued, epoch}: state "ok", or "fenced" when this process's heartbeat was
-- removed by another's recovery (its messages were requeued: it must not finish them, and starts
-- afresh under a new id); requeued, how many messages of dead processes went back on the queue;
-- epoch, the marker's value ("" when absent: Redis is new, or lost its data); created, "1" when
-- this call wrote it.
local hb, queue, msgs, xq, xmsgs = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local bid, timeout, prefix, fresh, dead_ttl = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], tonumber(ARGV[5])
local candidate = ARGV[6] or ""
--@now
local epoch = redis.call("get", KEYS[6]) or ""
local created = "0"
if epoch == "" and candidate ~= "" then
  redis.call("set", KEYS[6], candidate)
  epoch, created = candidate, "1"
end
local mine = redis.call("zscore", hb, bid)
if fresh ~= "1" and not mine then return {"fenced", 0, epoch, created} end
redis.call("zadd", hb, now, bid)
local requeued = 0
local dead = {}
-- A process whose own last heartbeat is stale too was cut off like everyone else (Redis restarted
-- or was out of reach): it presumes nobody dead before the others had a chance to heartbeat again.
if mine and now - tonumber(mine) <= timeout then
  dead = redis.call("zrangebyscore", hb, "-inf", now - timeout, "LIMIT", 0, 16)
end
for _, other in ipairs(dead) do
  if other ~= bid then
    local acks = prefix .. other
    for _, id in ipairs(redis.call("smembers", acks)) do
      if redis.call("hexists", msgs, id) == 1 then
        redis.call("lpush", queue, id)
        requeued = requeued + 1
      end
    end
    redis.call("del", acks)
    redis.call("zrem", hb, other)
  end
end
local expired = redis.call("zrangebyscore", xq, "-inf", now - dead_ttl, "LIMIT", 0, 100)
if #expired > 0 then
  redis.call("zrem", xq, unpack(expired))
  redis.call("hdel", xmsgs, unpack(expired))
end
return {"ok", requeued, epoch, created}
