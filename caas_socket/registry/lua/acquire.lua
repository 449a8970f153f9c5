-- acquire: take the lease of a server id with a new generation; fence and start
-- reaping whatever an earlier incarnation of the same id left.
-- ARGV: 2 server, 3 server (escaped), 4 generation, 5 lease ttl ms,
-- 6 tombstone ttl ms, 7 batch size.  Returns drain()'s {left, json...}.
local sid, esc, gen = ARGV[2], ARGV[3], ARGV[4]
local old = redis.call('HGET', P .. 'nodes', sid)
if old then
  redis.call('SET', P .. 'reaped:' .. esc, old, 'PX', ARGV[6])
end
start_reaping(esc)
redis.call('HSET', P .. 'nodes', sid, gen)
redis.call('HSET', P .. 'servers', sid, esc)
redis.call('SET', P .. 'node:' .. esc, gen, 'PX', ARGV[5])
return drain(esc, tonumber(ARGV[7]))
