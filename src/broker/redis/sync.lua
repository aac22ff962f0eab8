-- Where the deployment is: its epoch and the newest position. A node that has
-- already seen a newer position than the head (Redis restarted from an older
-- snapshot) starts a new epoch, so ids from the lost stretch are never taken for
-- positions in the new one.
--
-- ARGV: base, candidate epoch, the node's epoch ('' if none yet), the node's newest
-- position. Returns {epoch, head}.
local epoch = current_epoch(ARGV[2])
local head = tonumber(redis.call('GET', base .. 'seq') or '0')
if ARGV[3] == epoch and head < tonumber(ARGV[4]) then
  epoch = ARGV[2]
  redis.call('SET', base .. 'epoch', epoch)
end
return {epoch, head}
