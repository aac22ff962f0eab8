-- Accepts a batch of events: positions, per-channel history, the catch-up log and
-- the pub/sub message to every node, all in one atomic step.
--
-- ARGV: base, candidate epoch, log length, publisher-id ttl (ms), event count, then
-- per event: publisher id ('' for none), encoded event, '1' if live only, channel
-- count k, then k times: channel, history size, history ttl (ms).
-- Returns {epoch, time, r1, r2, ...}: ri is the position of event i, negative when
-- its publisher id was already known (the event was not published again).
local epoch = current_epoch(ARGV[2])
local now = now_ms()
local n = tonumber(ARGV[5])
local out = {epoch, now}
local i = 6

local function append(ch, size, ttl, seq, sid, blob)
  local hk = base .. 'h:' .. ch
  local forgotten = nil
  if not redis.call('ZSCORE', base .. 'channels', ch) then
    -- A channel without history, perhaps one dropped when its history expired:
    -- whatever its bucket remembers may have been this channel's.
    local dropped = redis.call('HGET', base .. 'forgotten', bucket(ch))
    if dropped then
      redis.call('SET', base .. 'f:' .. ch, dropped)
    end
  end
  if size == 0 then
    forgotten = seq
  else
    redis.call('XADD', hk, sid, 't', s(now), 'e', blob)
    local len = redis.call('XLEN', hk)
    if len > size then
      local old = redis.call('XRANGE', hk, '-', '+', 'COUNT', len - size)
      forgotten = idseq(old[#old][1])
      redis.call('XTRIM', hk, 'MAXLEN', size)
    end
    local cutoff = now - ttl
    while true do
      local first = redis.call('XRANGE', hk, '-', '+', 'COUNT', 1)[1]
      if not first or tonumber(first[2][2]) >= cutoff then
        break
      end
      forgotten = idseq(first[1])
      redis.call('XDEL', hk, first[1])
    end
  end
  if forgotten then
    redis.call('SET', base .. 'f:' .. ch, s(forgotten))
  end
  local expires = now + ttl
  if size == 0 then
    expires = now
  end
  redis.call('ZADD', base .. 'channels', s(expires), ch)
end

for _ = 1, n do
  local custom, blob, live, k = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  i = i + 4
  local known = false
  if custom ~= '' then
    known = redis.call('GET', base .. 'id:' .. custom)
  end
  if known then
    out[#out + 1] = -tonumber(known)
  else
    local seq = redis.call('INCR', base .. 'seq')
    local sid = s(seq) .. '-0'
    if custom ~= '' then
      redis.call('SET', base .. 'id:' .. custom, s(seq), 'PX', ARGV[4])
    end
    if live ~= '1' then
      for c = 0, k - 1 do
        local at = i + 3 * c
        append(ARGV[at], tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2]), seq, sid, blob)
      end
    end
    redis.call('XADD', base .. 'log', 'MAXLEN', '~', ARGV[3], sid, 't', s(now), 'e', blob)
    redis.call('PUBLISH', base .. 'events', epoch .. ' ' .. s(seq) .. ' ' .. s(now) .. '\n' .. blob)
    out[#out + 1] = seq
  end
  i = i + 3 * k
end
return out
