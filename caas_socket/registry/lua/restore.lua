-- restore: put back this node's live entries, unless the device is newer elsewhere.
-- ARGV: 2 lease server (escaped), 3 lease generation, then groups of 8 from 4 on:
-- user key, device, socket, server, server (escaped), JSON, connectedAt, lastActivity.
-- Returns {'fenced'} | {'ok', index (0-based) of each entry not written, or the
-- JSON of each older entry it replaced...}: both are connections to close.
if fenced(ARGV[2], ARGV[3]) then
  return {'fenced'}
end
local out = {'ok'}
for i = 4, #ARGV, 8 do
  local rel, dev, sock = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local cur = redis.call('HGET', P .. rel, dev)
  local newer = false
  if cur then
    local e = cjson.decode(cur)
    if e.socketId ~= sock then
      if e.connectedAt > tonumber(ARGV[i + 6]) then
        newer = true
        out[#out + 1] = (i - 4) / 8
      else
        remove_entry(rel, e)
        out[#out + 1] = cur
      end
    end
  end
  if not newer then
    put_entry(rel, dev, sock, ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV[i + 7])
  end
end
return out
