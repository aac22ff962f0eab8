-- Shared by every Herald script. ARGV[1] is the key base: "{prefix}:", whose hash
-- tag keeps every key of a deployment in one slot.
local base = ARGV[1]

local function s(n)
  return string.format('%d', n)
end

-- The position in a stream entry id "SEQ-0".
local function idseq(id)
  return tonumber(string.match(id, '^(%d+)'))
end

-- The deployment's epoch, created on first use.
local function current_epoch(candidate)
  local epoch = redis.call('GET', base .. 'epoch')
  if not epoch then
    epoch = candidate
    redis.call('SET', base .. 'epoch', epoch)
  end
  return epoch
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- One of the 4096 buckets remembering the newest position of dropped channels.
local function bucket(channel)
  return tonumber(string.sub(redis.sha1hex(channel), 1, 3), 16)
end

-- Appends event `seq` (entry id `sid`, accepted at `now`) to the history of `ch`,
-- trimmed to `size` events and `ttl` ms, remembering the newest position trimmed.
local function append(ch, size, ttl, seq, sid, blob, now)
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
