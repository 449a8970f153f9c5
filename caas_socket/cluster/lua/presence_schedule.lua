-- Schedule presence checks (after the grace period), several users at once.
-- ARGV: prefix, due time (ms), then members "{escaped tenant}:{escaped user}".
local key = ARGV[1] .. 'presence:due'
for i = 3, #ARGV do
  redis.call('ZADD', key, ARGV[2], ARGV[i])
end
return #ARGV - 2
