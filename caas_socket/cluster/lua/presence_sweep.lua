-- Run the presence checks that are due: a device without a registry entry is
-- offline; a user without any is offline. Each check runs once, on one node.
-- ARGV: prefix, now (ms), most checks to run
local P, now = ARGV[1], tonumber(ARGV[2])
local dueKey = P .. 'presence:due'
local due = redis.call('ZRANGEBYSCORE', dueKey, '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))

local function unescape(s)
  return (string.gsub(s, '%%(%x%x)', function(h) return string.char(tonumber(h, 16)) end))
end

for _, member in ipairs(due) do
  redis.call('ZREM', dueKey, member)
  local pk = P .. 'presence:' .. member
  local tenant = redis.call('HGET', pk, 'tenant')
  local user = redis.call('HGET', pk, 'user')
  if not tenant then
    -- The state was lost (Redis restarted empty) after the user was seen online:
    -- rebuild it from the member, so that the check can still announce offline.
    local colon = string.find(member, ':', 1, true)
    tenant = unescape(string.sub(member, 1, colon - 1))
    user = unescape(string.sub(member, colon + 1))
    redis.call('HSET', pk, 'tenant', tenant)
    redis.call('HSET', pk, 'user', user)
    redis.call('HSET', pk, 'status', 'online')
  end
  if tenant and user then
    local function publish(device, status)
      local v = math.max(tonumber(redis.call('HGET', pk, 'version') or '0') + 1, now)
      local version = string.format('%d', v)
      redis.call('HSET', pk, 'version', version)
      local d = 'null'
      if device then d = cjson.encode(device) end
      redis.call('PUBLISH', P .. 'presence', '{"v":1,"tenantId":' .. cjson.encode(tenant)
        .. ',"userId":' .. cjson.encode(user) .. ',"deviceId":' .. d
        .. ',"status":"' .. status .. '","version":' .. version .. ',"at":' .. ARGV[2] .. '}')
    end
    local present = {}
    local any = false
    for _, device in ipairs(redis.call('HKEYS', P .. 'conn:' .. member)) do
      present[device] = true
      any = true
    end
    for _, field in ipairs(redis.call('HKEYS', pk)) do
      if string.sub(field, 1, 2) == 'd:' then
        local device = string.sub(field, 3)
        if not present[device] then
          redis.call('HDEL', pk, field)
          publish(device, 'offline')
        end
      end
    end
    if not any and redis.call('HGET', pk, 'status') == 'online' then
      redis.call('HSET', pk, 'status', 'offline')
      publish(false, 'offline')
      redis.call('PEXPIRE', pk, 604800000)
    end
  end
end
return #due
