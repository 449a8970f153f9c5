-- release: clean stop; give up our lease and start removing our entries.
-- ARGV: 2 server, 3 server (escaped), 4 our generation, 5 batch size.
-- Returns drain()'s {left, json...}; {0} if a new incarnation holds the id.
local sid, esc, gen = ARGV[2], ARGV[3], ARGV[4]
local current = redis.call('HGET', P .. 'nodes', sid)
if current and current ~= gen then
  return {0}
end
start_reaping(esc)
if current then
  redis.call('HDEL', P .. 'nodes', sid)
  redis.call('DEL', P .. 'node:' .. esc)
end
return drain(esc, tonumber(ARGV[5]))
