-- Add rooms to a user's set, refusing to grow it past a limit.
-- ARGV: prefix, escaped tenant, escaped user, limit, room, room, ...
-- Returns 1, or 0 when the limit would be passed (nothing written).
local key = ARGV[1] .. 'rooms:' .. ARGV[2] .. ':' .. ARGV[3]
local fresh = 0
for i = 5, #ARGV do
  if redis.call('SISMEMBER', key, ARGV[i]) == 0 then
    fresh = fresh + 1
  end
end
if redis.call('SCARD', key) + fresh > tonumber(ARGV[4]) then
  return 0
end
for i = 5, #ARGV do
  redis.call('SADD', key, ARGV[i])
end
return 1
