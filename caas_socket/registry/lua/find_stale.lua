-- find_stale: up to ARGV[3] entries whose lastActivity is before ARGV[2].
local out, offset, limit = {}, 0, tonumber(ARGV[3])
while #out < limit do
  local refs = redis.call('ZRANGEBYSCORE', P .. 'activity', '-inf', '(' .. ARGV[2],
    'LIMIT', offset, limit - #out)
  if #refs == 0 then
    break
  end
  for _, ref in ipairs(refs) do
    local rel, dev = split_ref(ref)
    local cur = redis.call('HGET', P .. rel, dev)
    if cur then
      out[#out + 1] = cur
      offset = offset + 1
    else
      redis.call('ZREM', P .. 'activity', ref) -- an index entry without its field
    end
  end
end
return out
