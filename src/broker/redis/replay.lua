-- The events of some channels after a client's last id, or the channels whose
-- history no longer covers that gap.
--
-- ARGV: base, candidate epoch, last id ('' for everything kept), channel count n,
-- then n times: channel, history ttl (ms). On a history shard the candidate epoch
-- is '' and the last id is the position the sequencer resolved it to ('' for
-- everything kept).
-- Returns {'unknown', epoch, head} when the id is not known, else
-- {'ok', epoch, head, after (-1 for everything kept), c1, c2, ...} where ci is 0 when
-- channel i has a gap, else a flat list {seq, time, event, seq, time, event, ...}.
local now = now_ms()
local id = ARGV[3]
local after = nil
local epoch, head = '', 0
if ARGV[2] == '' then
  -- A history shard: the sequencer already resolved the id to a position.
  after = tonumber(id)
  id = ''
else
  epoch = current_epoch(ARGV[2])
  head = tonumber(redis.call('GET', base .. 'seq') or '0')
end
if id ~= '' then
  local known = redis.call('GET', base .. 'id:' .. id)
  if known then
    -- "{position} {channels digest}", or the position alone.
    after = tonumber(string.match(known, '^(%d+)'))
  else
    local e, n = string.match(id, '^([0-9a-f]+)%-(%d+)$')
    if e == epoch and tonumber(n) <= head then
      after = tonumber(n)
    end
  end
  if not after then
    return {'unknown', epoch, head}
  end
end
local out = {'ok', epoch, head, after or -1}
-- Positions whose events left the sequencer's log before this shard got them.
local lost = tonumber(redis.call('GET', base .. 'lost') or '0')
local n = tonumber(ARGV[4])
for c = 0, n - 1 do
  local ch, ttl = ARGV[5 + 2 * c], tonumber(ARGV[6 + 2 * c])
  local cutoff = now - ttl
  local hk = base .. 'h:' .. ch
  local forgotten = tonumber(redis.call('GET', base .. 'f:' .. ch) or '0')
  local gap = false
  local events = {}
  if after and after < lost then
    gap = true
  elseif forgotten == 0 and redis.call('EXISTS', hk) == 0 then
    -- No history: a channel never published to, or one dropped after its history
    -- expired, whose newest position lives on in its bucket.
    if after then
      local dropped = tonumber(redis.call('HGET', base .. 'forgotten', bucket(ch)) or '0')
      gap = after < dropped
    end
  elseif after and after < forgotten then
    gap = true
  else
    local start = '-'
    if after then
      start = s(after + 1) .. '-0'
    end
    for _, e in ipairs(redis.call('XRANGE', hk, start, '+')) do
      if tonumber(e[2][2]) < cutoff then
        -- Expired since it was written: forgotten, as far as a resume goes.
        if after then
          gap = true
          break
        end
      else
        events[#events + 1] = s(idseq(e[1]))
        events[#events + 1] = e[2][2]
        events[#events + 1] = e[2][4]
      end
    end
  end
  if gap then
    out[#out + 1] = 0
  else
    out[#out + 1] = events
  end
end
return out
