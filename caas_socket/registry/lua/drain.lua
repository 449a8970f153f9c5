-- drain: the next batch of a reap, acquire or release that had more entries
-- than one batch.  ARGV: 2 server (escaped), 3 batch size.
return drain(ARGV[2], tonumber(ARGV[3]))
