-- A device of a user is connected: publish "online" for the user and for the
-- device, each only if it was not online already.
-- ARGV: prefix, escaped tenant, escaped user, tenant, user, device, now (ms)
local P, now = ARGV[1], tonumber(ARGV[7])
local pk = P .. 'presence:' .. ARGV[2] .. ':' .. ARGV[3]

local function publish(device, status)
  local v = math.max(tonumber(redis.call('HGET', pk, 'version') or '0') + 1, now)
  local version = string.format('%d', v)
  redis.call('HSET', pk, 'version', version)
  local d = 'null'
  if device then d = cjson.encode(device) end
  redis.call('PUBLISH', P .. 'presence', '{"v":1,"tenantId":' .. cjson.encode(ARGV[4])
    .. ',"userId":' .. cjson.encode(ARGV[5]) .. ',"deviceId":' .. d
    .. ',"status":"' .. status .. '","version":' .. version .. ',"at":' .. ARGV[7] .. '}')
end

redis.call('HSET', pk, 'tenant', ARGV[4])
redis.call('HSET', pk, 'user', ARGV[5])
redis.call('PERSIST', pk)
if redis.call('HGET', pk, 'status') ~= 'online' then
  redis.call('HSET', pk, 'status', 'online')
  publish(false, 'online')
end
if redis.call('HSETNX', pk, 'd:' .. ARGV[6], '1') == 1 then
  publish(ARGV[6], 'online')
end
return 1
