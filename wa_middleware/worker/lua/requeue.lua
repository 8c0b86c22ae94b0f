#!lua flags=allow-oom
-- REQUEUE: give messages a worker process took back to the head of the queue, in their order
-- (its prefetched messages at shutdown, lane heads it could not run, messages it holds in Redis
-- but not in memory after a lost reply).
--
-- KEYS: acks (of that process), queue, messages hash.  ARGV: redis message ids.
-- Returns how many went back.
local n = 0
for i = #ARGV, 1, -1 do
  local id = ARGV[i]
  if redis.call("srem", KEYS[1], id) == 1 and redis.call("hexists", KEYS[3], id) == 1 then
    redis.call("lpush", KEYS[2], id)
    n = n + 1
  end
end
return n
