#!lua flags=allow-oom
-- PEEK: move the retries that are due onto the queue, then return the first messages of the
-- queue without taking them. Allowed when Redis is out of memory (noeviction): taking and
-- finishing work is what frees memory.
--
-- KEYS: queue, messages hash, retries (sorted set by due time).  ARGV: count.
-- Returns {ids, datas}, or {} for an empty queue.
--@now
local due = redis.call("zrangebyscore", KEYS[3], "-inf", now, "LIMIT", 0, 100)
if #due > 0 then
  redis.call("rpush", KEYS[1], unpack(due))
  redis.call("zrem", KEYS[3], unpack(due))
end
local ids = redis.call("lrange", KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #ids == 0 then return {} end
return {ids, redis.call("hmget", KEYS[2], unpack(ids))}
