"""Clients other services use to reach users through the command channel.

Every node subscribes to ``{prefix}api`` and applies each command it receives
to its own connections (``docs/API.rst``).  These clients build a command,
validate it with the nodes' own rules (:mod:`caas_socket.app.commands`),
publish it, and return how many nodes received it, so a caller can tell when
nobody listened:

* :class:`CommandClient` for plain synchronous code (a socket and RESP; no
  reactor, no dependency beyond this package);
* :class:`TwistedCommandClient` for Twisted programs (Deferreds, on
  :mod:`caas_socket.redis_connection`).
"""

from caas_socket.app.commands import Command, CommandError
from caas_socket.redis_connection import RedisUnavailable

from .base import CommandSender, api_channel, build_command
from .blocking import CommandClient
from .resp import RespError
from .twisted_client import TwistedCommandClient

__all__ = [
    "Command",
    "CommandClient",
    "CommandError",
    "CommandSender",
    "RedisUnavailable",
    "RespError",
    "TwistedCommandClient",
    "api_channel",
    "build_command",
]
