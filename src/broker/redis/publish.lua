-- Accepts a batch of events: positions, per-channel history, the catch-up log and
-- the pub/sub message to every node, all in one atomic step.
--
-- KEYS: every key it touches (seq first; see `RedisBroker::publish`).
-- ARGV: base, candidate epoch, log length, publisher-id ttl (ms), event count, the
-- command that sends to other nodes (PUBLISH, or SPUBLISH in a cluster), then per
-- event: publisher id ('' for none), the digest of its set of channels, encoded
-- event, '1' if live only, channel count k, then k times: channel, history size,
-- history ttl (ms). With shards, k is 0: the histories are written by append.lua on
-- each shard, from the log.
-- Returns {epoch, time, r1, r2, ...}: ri is the position of event i, negative when
-- its publisher id was already known for the same channels (the event was not
-- published again); or {epoch, time, 'conflict', i} (i from 0), publishing nothing,
-- when event i claims a publisher id known for other channels.
local epoch = current_epoch(ARGV[2])
local now = now_ms()
local n = tonumber(ARGV[5])
local out = {epoch, now}

-- A publisher id key holds "{position} {channels digest}" (or only the position,
-- written before digests were kept: taken as the same channels).
local function known_digest(stored, digest)
  return string.match(stored, '^%d+ (%x+)$') or digest
end

-- First, every id of the batch against those known and those earlier in the batch,
-- so that a conflict publishes nothing.
local claimed = {}
local i = 7
for e = 1, n do
  local custom, digest, k = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 4])
  if custom ~= '' then
    local known = claimed[custom]
    if not known then
      local stored = redis.call('GET', base .. 'id:' .. custom)
      if stored then
        known = known_digest(stored, digest)
      end
    end
    if known and known ~= digest then
      return {epoch, now, 'conflict', e - 1}
    end
    claimed[custom] = digest
  end
  i = i + 5 + 3 * k
end

i = 7
for _ = 1, n do
  local custom, digest, blob, live, k =
    ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], tonumber(ARGV[i + 4])
  i = i + 5
  local known = false
  if custom ~= '' then
    known = redis.call('GET', base .. 'id:' .. custom)
  end
  if known then
    out[#out + 1] = -tonumber(string.match(known, '^(%d+)'))
  else
    local seq = redis.call('INCR', base .. 'seq')
    local sid = s(seq) .. '-0'
    if custom ~= '' then
      redis.call('SET', base .. 'id:' .. custom, s(seq) .. ' ' .. digest, 'PX', ARGV[4])
    end
    if live ~= '1' then
      for c = 0, k - 1 do
        local at = i + 3 * c
        append(ARGV[at], tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2]), seq, sid, blob, now)
      end
    end
    redis.call('XADD', base .. 'log', 'MAXLEN', '~', ARGV[3], sid, 't', s(now), 'e', blob)
    redis.call(ARGV[6], base .. 'events', epoch .. ' ' .. s(seq) .. ' ' .. s(now) .. '\n' .. blob)
    out[#out + 1] = seq
  end
  i = i + 3 * k
end
return out
