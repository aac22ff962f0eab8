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
