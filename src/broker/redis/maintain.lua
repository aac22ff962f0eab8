-- Drops channels whose newest event has expired, folding their newest position
-- into their bucket so a late resume still learns of the gap.
--
-- KEYS: every key it touches (see `RedisBroker::maintain`). ARGV: base, then the
-- channels that looked due when the caller read them; each is dropped only if it
-- still is. Returns how many channels have history.
local now = now_ms()
for c = 2, #ARGV do
  local ch = ARGV[c]
  local expires = redis.call('ZSCORE', base .. 'channels', ch)
  if expires and tonumber(expires) <= now then
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
end
return redis.call('ZCARD', base .. 'channels')
