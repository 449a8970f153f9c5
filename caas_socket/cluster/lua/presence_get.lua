-- Presence of several users of one tenant.
-- ARGV: prefix, escaped tenant, then escaped user ids.
-- Returns, per user: { status, version, device, device, ... }
local P = ARGV[1]
local out = {}
for i = 3, #ARGV do
  local pk = P .. 'presence:' .. ARGV[2] .. ':' .. ARGV[i]
  local row = {
    redis.call('HGET', pk, 'status') or 'offline',
    redis.call('HGET', pk, 'version') or '0',
  }
  for _, field in ipairs(redis.call('HKEYS', pk)) do
    if string.sub(field, 1, 2) == 'd:' then
      row[#row + 1] = string.sub(field, 3)
    end
  end
  out[#out + 1] = row
end
return out
