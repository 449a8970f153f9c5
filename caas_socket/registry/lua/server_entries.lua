-- server_entries: one SSCAN step over a node's sockets.
-- ARGV: 2 server (escaped), 3 cursor, 4 count.  Returns {cursor, json...}.
local res = redis.call('SSCAN', server_key(ARGV[2], 'sockets'), ARGV[3], 'COUNT', ARGV[4])
local refs = server_key(ARGV[2], 'refs')
local out = {res[1]}
for _, sock in ipairs(res[2]) do
  local ref = redis.call('HGET', refs, sock)
  if ref then
    local rel, dev = split_ref(ref)
    local cur = redis.call('HGET', P .. rel, dev)
    if cur and cjson.decode(cur).socketId == sock then
      out[#out + 1] = cur
    end
  end
end
return out
