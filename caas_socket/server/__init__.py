"""The application-facing Socket.IO API.

::

    io = SocketServer(reactor, Settings(ping_interval=25))

    @io.use
    async def authenticate(socket):
        if socket.handshake.auth.get("token") != "let-me-in":
            raise ConnectionRefused("Authentication failed", {"code": "bad_token"})

    @io.on("message-with-ack")
    def echo(socket, *args):
        return args          # acks with the same arguments

    @io.of("/custom").on_connect
    def greet(socket):
        socket.emit("auth", socket.handshake.auth)

Transports (see :mod:`caas_socket.transport.websocket`) feed connections into
:meth:`SocketServer.open_session`.
"""

from .errors import AckError, ConnectionRefused
from .namespace import BroadcastOperator, Namespace
from .server import SocketServer
from .settings import Handshake, Settings
from .socket import Socket, SocketState

__all__ = [
    "AckError",
    "BroadcastOperator",
    "ConnectionRefused",
    "Handshake",
    "Namespace",
    "Settings",
    "Socket",
    "SocketServer",
    "SocketState",
]
