-- Writes accepted events into the channel histories of one shard, in position
-- order, from the sequencer's log. Idempotent: `applied` records how far this
-- shard's histories are written, and a call that does not start there changes
-- nothing, so any node may apply (again) what another node left half done.
--
-- ARGV: base, epoch, applied (as the caller read it), new applied, lost (the newest
-- position the log no longer held when it was read, 0 for none), event count, then
-- per event: position, time (ms), encoded event, channel count k, then k times:
-- channel, history size, history ttl (ms).
-- Returns the applied position after the call.
local epoch = ARGV[2]
if redis.call('GET', base .. 'applied_epoch') ~= epoch then
  -- The sequencer started a new epoch (it lost its data): positions start again,
  -- so histories of the old epoch go.
  for _, ch in ipairs(redis.call('ZRANGE', base .. 'channels', 0, -1)) do
    redis.call('DEL', base .. 'h:' .. ch, base .. 'f:' .. ch)
  end
  redis.call('DEL', base .. 'channels', base .. 'forgotten', base .. 'applied', base .. 'lost')
  redis.call('SET', base .. 'applied_epoch', epoch)
end
local applied = tonumber(redis.call('GET', base .. 'applied') or '0')
if applied ~= tonumber(ARGV[3]) then
  return applied
end
local lost = tonumber(ARGV[5])
if lost > tonumber(redis.call('GET', base .. 'lost') or '0') then
  redis.call('SET', base .. 'lost', s(lost))
end
local n = tonumber(ARGV[6])
local i = 7
for _ = 1, n do
  local seq, time, blob, k = tonumber(ARGV[i]), tonumber(ARGV[i + 1]), ARGV[i + 2], tonumber(ARGV[i + 3])
  i = i + 4
  for c = 0, k - 1 do
    local at = i + 3 * c
    append(ARGV[at], tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2]), seq, s(seq) .. '-0', blob, time)
  end
  i = i + 3 * k
end
redis.call('SET', base .. 'applied', ARGV[4])
return tonumber(ARGV[4])
