-- reap: if the node's lease is gone, fence its generation and start removing
-- its entries.  ARGV: 2 server, 3 server (escaped), 4 tombstone ttl ms,
-- 5 batch size.  Returns {-1} if the lease is held, else drain()'s {left, json...}.
local sid, esc = ARGV[2], ARGV[3]
if redis.call('EXISTS', P .. 'node:' .. esc) == 1 then
  return {-1}
end
local gen = redis.call('HGET', P .. 'nodes', sid)
if gen then
  redis.call('SET', P .. 'reaped:' .. esc, gen, 'PX', ARGV[4])
  redis.call('HDEL', P .. 'nodes', sid)
end
start_reaping(esc)
return drain(esc, tonumber(ARGV[5]))
