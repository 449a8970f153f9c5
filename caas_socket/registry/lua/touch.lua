-- touch: store newer lastActivity times, skipping replaced or removed entries.
-- ARGV: groups of 4 from 2 on: user key, device, socket, lastActivity.
for i = 2, #ARGV, 4 do
  local rel, dev, sock, when = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local cur = redis.call('HGET', P .. rel, dev)
  if cur then
    local e = cjson.decode(cur)
    if e.socketId == sock and tonumber(when) > e.lastActivity then
      -- Entry.to_json() ends with "lastActivity":N}; rewrite only that number
      -- so the stored text keeps its exact form.
      local json, n = string.gsub(cur, '"lastActivity":[-+.%deE]+}$', '"lastActivity":' .. when .. '}')
      if n ~= 1 then
        e.lastActivity = tonumber(when)
        json = cjson.encode(e)
      end
      redis.call('HSET', P .. rel, dev, json)
      redis.call('ZADD', P .. 'activity', when, rel .. '\n' .. dev)
    end
  end
end
return 0
