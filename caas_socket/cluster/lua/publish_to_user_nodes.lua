-- Publish bus messages to every node, but this one, that holds a device of their user.
-- ARGV: this node's server id, channel prefix, then pairs (user hash key with
-- prefix, message). Messages for the same node go out in one PUBLISH, in order:
-- alone as they are, or several in a batch envelope ("caas/1* " then, for each,
-- its length in bytes, a newline, and the message). Returns the PUBLISH count.
-- One round trip per batch, however many messages, devices and nodes, and
-- never a stale view of where the devices are.
local me, prefix = ARGV[1], ARGV[2]
local queued, order = {}, {}
for i = 3, #ARGV - 1, 2 do
  local seen = {}
  for _, entry in ipairs(redis.call('HVALS', ARGV[i])) do
    local sid = string.match(entry, '"serverId":"([^"]*)"')
    if sid and sid ~= me and not seen[sid] then
      seen[sid] = true
      local list = queued[sid]
      if not list then
        list = {}
        queued[sid] = list
        order[#order + 1] = sid
      end
      list[#list + 1] = ARGV[i + 1]
    end
  end
end
for _, sid in ipairs(order) do
  local list = queued[sid]
  if #list == 1 then
    redis.call('PUBLISH', prefix .. sid, list[1])
  else
    local parts = {'caas/1* '}
    for _, message in ipairs(list) do
      parts[#parts + 1] = string.len(message) .. '\n'
      parts[#parts + 1] = message
    end
    redis.call('PUBLISH', prefix .. sid, table.concat(parts))
  end
end
return #order
