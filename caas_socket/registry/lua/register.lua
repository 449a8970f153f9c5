-- register: add one entry under its user, enforcing the device limit, atomically.
-- ARGV: 2 lease server (escaped), 3 lease generation ('' = none), 4 user key,
-- 5 device, 6 socket, 7 server, 8 server (escaped), 9 entry JSON,
-- 10 lastActivity, 11 max devices, 12 policy ('reject' | 'evict-oldest').
-- Returns {'fenced'} | {'rejected'} | {'ok', previous JSON or '', evicted JSON...}.
if fenced(ARGV[2], ARGV[3]) then
  return {'fenced'}
end
local rel, dev = ARGV[4], ARGV[5]
local prev = redis.call('HGET', P .. rel, dev)
local out = {'ok', prev or ''}
if prev then
  remove_entry(rel, cjson.decode(prev))
else
  local n = redis.call('HLEN', P .. rel)
  local max = tonumber(ARGV[11])
  if n >= max then
    if ARGV[12] == 'reject' then
      return {'rejected'}
    end
    local by_age = {}
    for i, raw in ipairs(redis.call('HVALS', P .. rel)) do
      by_age[i] = {cjson.decode(raw), raw}
    end
    table.sort(by_age, function(a, b)
      if a[1].connectedAt ~= b[1].connectedAt then
        return a[1].connectedAt < b[1].connectedAt
      end
      return a[1].socketId < b[1].socketId
    end)
    for i = 1, math.min(n, n - max + 1) do
      remove_entry(rel, by_age[i][1])
      out[#out + 1] = by_age[i][2]
    end
  end
end
put_entry(rel, dev, ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10])
return out
