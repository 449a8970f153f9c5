-- Schedule a presence check of one user (after the grace period).
-- ARGV: prefix, escaped tenant, escaped user, due time (ms)
redis.call('ZADD', ARGV[1] .. 'presence:due', ARGV[4], ARGV[2] .. ':' .. ARGV[3])
return 1
