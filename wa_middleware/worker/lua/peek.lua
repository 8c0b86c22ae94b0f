-- PEEK: the first messages of a queue, without taking them.
-- KEYS: queue, messages hash.  ARGV: count.
-- Returns {ids, datas}, or {} for an empty queue.
local ids = redis.call("lrange", KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #ids == 0 then return {} end
return {ids, redis.call("hmget", KEYS[2], unpack(ids))}
