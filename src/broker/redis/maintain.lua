-- Drops channels whose newest event has expired, folding their newest position
-- into their bucket so a late resume still learns of the gap.
--
-- ARGV: base, most channels to drop at once. Returns how many channels have history.
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', base .. 'channels', '-inf', s(now), 'LIMIT', 0, ARGV[2])
for _, ch in ipairs(due) do
  local hk, fk = base .. 'h:' .. ch, base .. 'f:' .. ch
  local last = tonumber(redis.call('GET', fk) or '0')
  local newest = redis.call('XREVRANGE', hk, '+', '-', 'COUNT', 1)[1]
  if newest then
    last = math.max(last, idseq(newest[1]))
  end
  local b = bucket(ch)
  if last > tonumber(redis.call('HGET', base .. 'forgotten', b) or '0') then
    redis.call('HSET', base .. 'forgotten', b, s(last))
  end
  redis.call('DEL', hk, fk)
  redis.call('ZREM', base .. 'channels', ch)
end
return redis.call('ZCARD', base .. 'channels')
