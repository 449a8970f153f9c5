-- renew: extend our lease, or tell why we cannot.
-- ARGV: 2 server, 3 server (escaped), 4 our generation, 5 lease ttl ms.
-- Returns 'held' | 'reacquired' | 'reaped'.
local sid, esc, gen = ARGV[2], ARGV[3], ARGV[4]
local lease = P .. 'node:' .. esc
if redis.call('GET', lease) == gen then
  redis.call('PEXPIRE', lease, ARGV[5])
  return 'held'
end
if redis.call('GET', P .. 'reaped:' .. esc) == gen then
  return 'reaped'
end
local current = redis.call('HGET', P .. 'nodes', sid)
if current and current ~= gen then
  return 'reaped' -- a new incarnation of our server id took over
end
-- Expired without a reap, or Redis lost everything: take it again.
redis.call('HSET', P .. 'nodes', sid, gen)
redis.call('HSET', P .. 'servers', sid, esc)
redis.call('SET', lease, gen, 'PX', ARGV[5])
return 'reacquired'
