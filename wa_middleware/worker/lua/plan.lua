#!lua flags=allow-oom
-- PLAN: take messages off the head of the queue (only while the head is the one expected) and
-- claim their units, atomically, so conversation lanes follow the order of the queue exactly.
--
-- KEYS: queue, acks (of this worker process), heartbeats, stats, units, epoch marker, the
-- done-marks' prefix (marks.py: a unit done has no claim left in its hash, but a done-mark).
-- ARGV (packed: finish.pack's msgpack array in ARGV[1], unpacked below): broker id, ttl ms, pop
-- ("1": take from the queue head, "0": plan only), fresh ("1": the broker id is new, register it),
-- the epoch marker's value as this process first saw it ("" if not seen yet), then per message its
-- fields as wa_middleware/worker/finish.py's PLAN_MESSAGE names them (``stale``: "" or
-- marks.progress_arg's), and:
--   n >= 0 (a delivery): n units, each as PLAN_UNIT names them
--   n == -1 (a unit's own message): one PLAN_OWN record
-- A unit whose ``after`` is the unit right ahead of it in its lane, when that one was claimed to run
-- (in an earlier call, or "r" in this one), is claimed to run as well ("r"): the process runs it in
-- the same work item, after that one (`Dispatcher` follow-ups), instead of storing it to hand over.
-- Returns one string per message taken: per unit "r" (run now, by this message), "q" (waits in
-- its lane: the message's FINISH stores the unit's own message, which runs it at its turn; until
-- then the delivery holds its claim, so that a delivery planned again after a crash plans it
-- again), "s" (skip: done, dead, or claimed by another message: a duplicate), "t" (skip: a
-- stale status). A worker process whose lease was taken over (its heartbeat removed by another
-- worker's recovery) takes nothing: the error WAFENCED tells it to start afresh under a new id.
-- Nothing is taken either from a Redis whose epoch marker is not the one seen (it lost its data,
-- once-per-event records included): the error WALOST.
local queue, acks, hb, stats, units, DN = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[7]
--@packed
--@include marks
local bid, ttl, pop, fresh, epoch = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
if epoch ~= "" and redis.call("get", KEYS[6]) ~= epoch then return redis.error_reply("WALOST") end
if pop == "1" then
  if fresh ~= "1" and not redis.call("zscore", hb, bid) then return redis.error_reply("WAFENCED " .. bid) end
  --@now
  redis.call("zadd", hb, now, bid)
end
local out = {}
local group_heads = {}
-- The step given to each unit planned in this call (a unit not in it was planned by an earlier call).
local steps = {}
local i = 6
local dups = 0
while i <= #ARGV do
  --@bind PLAN_MESSAGE
  local n = tonumber(count)
  if pop == "1" then
    if redis.call("lindex", queue, 0) ~= rid then break end
    redis.call("lpop", queue)
    redis.call("sadd", acks, rid)
  end
  local res = {}
  if n < 0 then
    --@bind PLAN_OWN
    local v = redis.call("hget", key, field)
    if v == "c|" .. mid and (lane == "" or redis.call("lindex", lane, 0) == mid) then
      res[1] = "r"
    else
      res[1] = "s"
    end
  else
    -- Lanes this message (or its batch) heads: its later units in them run too, in order.
    local heads = {}
    if group ~= "" then
      heads = group_heads[group] or {}
      group_heads[group] = heads
    end
    for u = 1, n do
      --@bind PLAN_UNIT
      local v = redis.call("hget", key, field)
      if not v and hour ~= "" and marked(hour, shard, digest, ttl) then v = "d" end
      local r = "s"
      if not v and stale ~= "" then
        -- A status of a message: stale if a higher rank of that message is marked in any hour from
        -- its own to now (marks.progress_arg); else it records its own rank reached.
        local own_hour, now_hour, own, higher = string.match(stale, "^([^|]*)|([^|]*)|([^|]*)|(.*)$")
        local first = tonumber(own_hour)
        local last = math.max(first, tonumber(now_hour))
        local newer = false
        for s, d in string.gmatch(higher, "(%d+):(%-?%d+)") do
          for h = first, last do
            if marked_in(tostring(h), s, d) then
              newer = true
              break
            end
          end
          if newer then break end
        end
        if newer then
          if hour ~= "" then
            add_mark(hour, shard, digest, ttl)
          else
            redis.call("hset", key, field, "d")
            redis.call("pexpire", key, ttl)
          end
          redis.call("hincrby", stats, "stale_statuses", 1)
          v = "d"
          r = "t"
        else
          local s, d = string.match(own, "^(%d+):(%-?%d+)$")
          add_mark(own_hour, s, d, ttl)
        end
      end
      if not v then
        if lane == "" then
          redis.call("hset", key, field, "c|" .. mid)
          r = "r"
        else
          -- heads[lane]: the position in the lane of the last unit this message (or its batch)
          -- runs there; a unit right behind it, or at the head, runs too, in order.
          local n = redis.call("rpush", lane, uid)
          if n == 1 or heads[lane] == n - 2 then
            heads[lane] = n - 1
            redis.call("hset", key, field, "c|" .. mid)
            r = "r"
          elseif after ~= "" and (steps[after] or "r") == "r" and redis.call("lindex", lane, -2) == after then
            redis.call("hset", key, field, "c|" .. mid)
            r = "r"
          else
            -- Waits: claimed by the delivery until its FINISH stores the unit's own message ("wait").
            redis.call("hset", key, field, "c|" .. mid)
            r = "q"
          end
        end
        redis.call("pexpire", key, ttl)
      elseif v == "c|" .. mid then
        -- Claimed by this very message before (it is planned again: requeued by a recovery, or
        -- taken by a batch that did not finish). An ordered unit runs only at its lane's head:
        -- behind others it waits for its turn (stored by the delivery's FINISH); out of its lane
        -- already, it runs.
        local at = lane ~= "" and redis.call("lpos", lane, uid)
        if not at then
          r = "r"
        elseif at == 0 or heads[lane] == at - 1 then
          heads[lane] = at
          r = "r"
        else
          r = "q"
        end
      elseif r ~= "t" then
        dups = dups + 1
      end
      res[u] = r
      steps[uid] = r
    end
  end
  out[#out + 1] = table.concat(res)
end
if dups > 0 then redis.call("hincrby", stats, "duplicates", dups) end
return out
