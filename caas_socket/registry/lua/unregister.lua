-- unregister: remove an entry only while its device still belongs to its socket.
-- ARGV: 2 user key, 3 device, 4 socket, 5 server.  Returns 1 if removed, else 0.
drop_socket(ARGV[5], ARGV[4])
if remove_field(ARGV[2], ARGV[3], ARGV[4]) then
  return 1
end
return 0
