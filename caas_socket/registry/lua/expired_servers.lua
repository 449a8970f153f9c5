-- expired_servers: known servers whose lease key is gone and that still have a
-- lease record or entries.  Forgets servers with nothing left.  ARGV: none.
local out = {}
local servers = redis.call('HGETALL', P .. 'servers')
for i = 1, #servers, 2 do
  local sid, esc = servers[i], servers[i + 1]
  if redis.call('EXISTS', P .. 'node:' .. esc) == 0 then
    if redis.call('HEXISTS', P .. 'nodes', sid) == 1
        or redis.call('EXISTS', server_key(esc, 'sockets'), server_key(esc, 'reaping')) > 0 then
      out[#out + 1] = sid
    else
      redis.call('HDEL', P .. 'servers', sid)
    end
  end
end
return out
