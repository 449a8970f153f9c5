-- Publish one bus message to every node, but this one, that holds a device of a user.
-- ARGV: user hash key (with prefix), this node's server id, channel prefix, payload.
-- Returns the number of nodes published to. One round trip per message, however
-- many devices and nodes the user has, and no stale view of where they live.
local seen = {}
local nodes = 0
local entries = redis.call('HVALS', ARGV[1])
for i = 1, #entries do
  local sid = string.match(entries[i], '"serverId":"([^"]*)"')
  if sid and sid ~= ARGV[2] and not seen[sid] then
    seen[sid] = true
    redis.call('PUBLISH', ARGV[3] .. sid, ARGV[4])
    nodes = nodes + 1
  end
end
return nodes
