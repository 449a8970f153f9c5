-- Helpers prepended to every script of this folder (see docs/REDIS.rst).
-- ARGV[1] is always the key prefix; every other key name is built from it, so
-- the scripts pass no KEYS (standalone Redis or Sentinel, not Redis Cluster).
local P = ARGV[1]

local function server_key(sid_esc, suffix)
  return P .. 'server:' .. sid_esc .. ':' .. suffix
end

-- A "ref" names one device field: the user key (without prefix), "\n", the device id.
local function split_ref(ref)
  local nl = string.find(ref, '\n', 1, true)
  return string.sub(ref, 1, nl - 1), string.sub(ref, nl + 1)
end

-- Forget socket `sock` in the indexes of server `sid` (raw id).
local function drop_socket(sid, sock)
  local esc = redis.call('HGET', P .. 'servers', sid)
  if esc then
    redis.call('SREM', server_key(esc, 'sockets'), sock)
    redis.call('SREM', server_key(esc, 'reaping'), sock)
    redis.call('HDEL', server_key(esc, 'refs'), sock)
  end
end

-- Delete the device field only while it still holds socket `sock`; returns the
-- removed entry JSON, or false.
local function remove_field(rel, dev, sock)
  local cur = redis.call('HGET', P .. rel, dev)
  if cur and cjson.decode(cur).socketId == sock then
    redis.call('HDEL', P .. rel, dev)
    redis.call('ZREM', P .. 'activity', rel .. '\n' .. dev)
    return cur
  end
  return false
end

-- Remove a stored entry (decoded `e`, under user key `rel`) everywhere.
local function remove_entry(rel, e)
  drop_socket(e.serverId, e.socketId)
  return remove_field(rel, e.deviceId, e.socketId)
end

local function put_entry(rel, dev, sock, sid, sid_esc, json, last_activity)
  local ref = rel .. '\n' .. dev
  redis.call('HSET', P .. rel, dev, json)
  redis.call('HSET', P .. 'servers', sid, sid_esc)
  redis.call('SADD', server_key(sid_esc, 'sockets'), sock)
  redis.call('HSET', server_key(sid_esc, 'refs'), sock, ref)
  redis.call('ZADD', P .. 'activity', last_activity, ref)
end

-- True when a node holding generation `gen` ('' = no lease taken) lost its lease.
local function fenced(sid_esc, gen)
  return gen ~= '' and redis.call('GET', P .. 'node:' .. sid_esc) ~= gen
end

-- Move the node's live socket set aside, to be drained in batches; sockets that
-- the node (or a new incarnation) adds later land in a fresh set.
local function start_reaping(sid_esc)
  local sockets = server_key(sid_esc, 'sockets')
  if redis.call('EXISTS', sockets) == 1 then
    local reaping = server_key(sid_esc, 'reaping')
    if redis.call('EXISTS', reaping) == 1 then
      redis.call('SUNIONSTORE', reaping, reaping, sockets)
      redis.call('DEL', sockets)
    else
      redis.call('RENAME', sockets, reaping)
    end
  end
end

-- Remove up to `limit` entries being reaped.  Returns {left, json...}: the
-- number of sockets still to drain, then each entry removed (SPOP hands every
-- socket to exactly one caller, so racing reapers never return one twice).
local function drain(sid_esc, limit)
  local reaping = server_key(sid_esc, 'reaping')
  local refs = server_key(sid_esc, 'refs')
  local out = {0}
  for _, sock in ipairs(redis.call('SPOP', reaping, limit)) do
    local ref = redis.call('HGET', refs, sock)
    if ref then
      redis.call('HDEL', refs, sock)
      local rel, dev = split_ref(ref)
      local removed = remove_field(rel, dev, sock)
      if removed then
        out[#out + 1] = removed
      end
    end
  end
  out[1] = redis.call('SCARD', reaping)
  return out
end
