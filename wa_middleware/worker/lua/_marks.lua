-- Done-marks (wa_middleware/worker/marks.py): the 64-bit digests of the units done, in sets of
-- integers per hour of the event's own time; level j of an hour has FANOUT^j sets, and an hour's
-- marks go one level deeper once a set holds SPLIT_AT of them (small sets stay intsets). Every
-- set and the level key of an hour expire together, ttl after the hour ends.
-- Included by the scripts that need it (the include line names "marks"); DN is the key prefix
-- (KeyLayout.done_marks).
--@marks
local mark_levels = {}
local function mark_level(hour)
  local level = mark_levels[hour]
  if level == nil then
    level = tonumber(redis.call("get", DN .. hour) or "0")
    mark_levels[hour] = level
  end
  return level
end
local function marked_in(hour, shard, digest)
  shard = tonumber(shard)
  local width = 1
  for level = 0, mark_level(hour) do
    if redis.call("sismember", DN .. hour .. ":" .. level .. ":" .. (shard % width), digest) == 1 then
      return true
    end
    width = width * FANOUT
  end
  return false
end
-- An hour "w<n>" is the hour a mark was written in (events without a time of their own): a lookup
-- checks every such hour of the window, back from n.
local function marked(hour, shard, digest, ttl)
  if string.byte(hour, 1) ~= 119 then return marked_in(hour, shard, digest) end
  local base = tonumber(string.sub(hour, 2))
  for h = base, base - math.ceil(ttl / 3600000), -1 do
    if marked_in("w" .. h, shard, digest) then return true end
  end
  return false
end
local function add_mark(hour, shard, digest, ttl)
  local level = mark_level(hour)
  local set = DN .. hour .. ":" .. level .. ":" .. (tonumber(shard) % (FANOUT ^ level))
  if redis.call("sadd", set, digest) == 1 then
    local size = redis.call("scard", set)
    local expire_at = ((tonumber(hour) or tonumber(string.sub(hour, 2))) + 1) * 3600000 + ttl
    if size == 1 then redis.call("pexpireat", set, expire_at) end
    if size >= SPLIT_AT and level < MAX_LEVEL then
      redis.call("set", DN .. hour, level + 1)
      redis.call("pexpireat", DN .. hour, expire_at)
      mark_levels[hour] = level + 1
    end
  end
end
